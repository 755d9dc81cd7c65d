import Mocha from 'mocha';

/**
 * Mocha's spec reporter, plus one closing line `N passed, N failed` that CI
 * reads.
 */
class SummaryReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    runner.once(Mocha.Runner.constants.EVENT_RUN_END, () => {
      const stats = runner.stats ?? { passes: 0, failures: 0, pending: 0 };
      const pending = stats.pending > 0 ? `, ${stats.pending} skipped` : '';
      // Printed after the spec reporter's own epilogue.
      process.on('exit', () => console.log(`${stats.passes} passed, ${stats.failures} failed${pending}`));
    });
  }
}

export = SummaryReporter;
