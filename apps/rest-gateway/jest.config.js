module.exports = { ...require('../../jest.preset.js'), displayName: 'rest-gateway', rootDir: __dirname };
