module.exports = {
  ...require('../../jest.preset.js'),
  displayName: 'group-message-router',
  rootDir: __dirname,
};
