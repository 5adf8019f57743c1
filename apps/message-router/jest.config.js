module.exports = { ...require('../../jest.preset.js'), displayName: 'message-router', rootDir: __dirname };
