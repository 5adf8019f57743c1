module.exports = { ...require('../../jest.preset.js'), displayName: 'ws-gateway', rootDir: __dirname };
