import { expect } from 'chai';
import { renderQueryResult, renderWorkReport } from '../../src/cli/commands/fan-out-commands';
import { csvCell, renderCsv } from '../../src/cli/csv-format';

describe('CLI: text and CSV renderings of exec and run', () => {
  it('exec: the rows as a table, then the failed tenants with their code, then the counts', () => {
    const text = renderQueryResult({
      rows: [
        { tenant: 'acme', n: 2 },
        { tenant: 'globex', n: null },
      ],
      failures: [{ slug: 'initech', status: 'failed', error: { message: 'relation "project" does not exist', code: '42P01' }, ms: 3 }],
      totals: { tenants: 3, done: 2, failed: 1, skipped: 0, rows: 2, ms: 12 },
    });
    expect(text).to.equal(
      ['tenant  n', 'acme    2', 'globex  NULL', 'SLUG     STATUS  ERROR', 'initech  failed  relation "project" does not exist [42P01]', '3 tenants: 2 done, 1 failed, 0 skipped; 2 rows in 12 ms', ''].join('\n'),
    );
  });

  it('run: only the tenants not done, unless verbose', () => {
    const report = {
      results: [
        { slug: 'acme', status: 'done' as const, value: 4, ms: 5 },
        { slug: 'globex', status: 'skipped' as const, error: { message: 'Not run: the tenant is suspended.' }, ms: 0 },
      ],
      totals: { tenants: 2, done: 1, failed: 0, skipped: 1, ms: 9 },
    };
    expect(renderWorkReport(report)).to.equal(
      ['SLUG    STATUS   MS  RESULT', 'globex  skipped  0   Not run: the tenant is suspended.', '2 tenants: 1 done, 0 failed, 1 skipped in 9 ms (1 done not listed; --verbose lists them)', ''].join('\n'),
    );
    expect(renderWorkReport(report, true)).to.contain('acme    done     5   4');
  });

  it('CSV: quoting by RFC 4180, columns in the order first seen, dates in ISO 8601, objects as JSON', () => {
    expect(csvCell('a,b')).to.equal('"a,b"');
    expect(csvCell('say "x"')).to.equal('"say ""x"""');
    expect(csvCell('line\r\nbreak')).to.equal('"line\r\nbreak"');
    expect(csvCell(' x')).to.equal('" x"');
    expect(csvCell(null)).to.equal('');
    expect(csvCell(new Date('2026-01-02T03:04:05.000Z'))).to.equal('2026-01-02T03:04:05.000Z');
    expect(csvCell({ a: 1 })).to.equal('"{""a"":1}"');
    expect(renderCsv([{ tenant: 'a', x: 1 }, { tenant: 'b', y: 2 }])).to.equal('tenant,x,y\r\na,1,\r\nb,,2\r\n');
    expect(renderCsv([])).to.equal('');
  });
});
