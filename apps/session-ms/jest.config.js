module.exports = { ...require('../../jest.preset.js'), displayName: 'session-ms', rootDir: __dirname };
