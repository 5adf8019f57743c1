module.exports = { ...require('../../jest.preset.js'), displayName: 'group-ms', rootDir: __dirname };
