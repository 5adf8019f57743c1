module.exports = { ...require('../../jest.preset.js'), displayName: 'reliability', rootDir: __dirname };
