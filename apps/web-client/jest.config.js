module.exports = {
  ...require('../../jest.preset.js'),
  displayName: 'web-client',
  rootDir: __dirname,
  testTimeout: 90000,
};
