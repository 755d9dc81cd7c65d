'use strict';
// Tests run from the compiled build/ folder: `npm test` builds first.
module.exports = {
  spec: ['build/test/**/*.test.js'],
  require: ['reflect-metadata', 'build/test/setup.js'],
  reporter: 'build/test/support/summary-reporter.js',
  timeout: 60_000,
  forbidOnly: Boolean(process.env.CI),
};
