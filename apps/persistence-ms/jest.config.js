module.exports = { ...require('../../jest.preset.js'), displayName: 'persistence-ms', rootDir: __dirname };
