module.exports = { ...require('../../jest.preset.js'), displayName: 'push-ms', rootDir: __dirname };
