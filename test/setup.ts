import chai from 'chai';
import chaiAsPromised from 'chai-as-promised';
import { startScratchDatabase, type ScratchDatabase } from '../support/database';
import { closeAdmin, destroyOpenManagers, setDatabase } from './support/fixtures';

// A rejection nobody handled is a bug in the library or a test: fail the run.
process.on('unhandledRejection', (reason) => {
  console.error('Unhandled rejection:', reason);
  process.exitCode = 1;
  throw reason;
});

chai.use(chaiAsPromised);

let database: ScratchDatabase | undefined;

export const mochaHooks = {
  async beforeAll(this: Mocha.Context): Promise<void> {
    this.timeout(120_000);
    database = await startScratchDatabase();
    setDatabase(database);
    console.log(`  (tests run on ${database.description})`);
  },
  async afterEach(): Promise<void> {
    await destroyOpenManagers();
  },
  async afterAll(this: Mocha.Context): Promise<void> {
    this.timeout(120_000);
    await destroyOpenManagers();
    await closeAdmin();
    await database?.stop();
  },
};
