import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * `typeorm-tenants/storage` with the optional peer `@aws-sdk/client-s3`
 * missing: a child process whose module resolution refuses every
 * `@aws-sdk/*` package loads the subpath, uses the local-disk driver's
 * factory, and gets a TenancyConfigurationError naming the package from
 * s3Driver(). The main entry loads too.
 */
describe('typeorm-tenants/storage without @aws-sdk/client-s3', () => {
  it('loads, and s3Driver() says which package to install', () => {
    const storage = join(__dirname, '..', '..', 'src', 'storage', 'index.js');
    const main = join(__dirname, '..', '..', 'src', 'index.js');
    const script = `
      const Module = require('node:module');
      const resolve = Module._resolveFilename;
      Module._resolveFilename = function (request, ...rest) {
        if (request.startsWith('@aws-sdk/')) { const e = new Error("Cannot find module '" + request + "'"); e.code = 'MODULE_NOT_FOUND'; throw e; }
        return resolve.call(this, request, ...rest);
      };
      require(${JSON.stringify(main)});
      const storage = require(${JSON.stringify(storage)});
      storage.localDiskDriver({ root: require('node:os').tmpdir() + '/unused-tenant-files-root' });
      try { storage.s3Driver({ client: {}, bucket: 'files' }); console.log('no error'); }
      catch (e) { console.log(JSON.stringify({ name: e.name, code: e.code, message: e.message })); }
    `;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(result.status, result.stderr).to.equal(0);
    const outcome = JSON.parse(result.stdout.trim()) as { name: string; code: string; message: string };
    expect(outcome.name).to.equal('TenancyConfigurationError');
    expect(outcome.code).to.equal('INVALID_CONFIGURATION');
    expect(outcome.message).to.include('npm install @aws-sdk/client-s3');
  });
});
