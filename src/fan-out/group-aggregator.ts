import { InvalidArgumentError } from '../errors';
import { addDecimal, compareDecimal, isExactDecimal } from './exact-decimal';

/** How one column of the per-tenant rows is merged across tenants. */
export type AggregateFunction = 'count' | 'sum' | 'min' | 'max';

const FUNCTIONS: readonly AggregateFunction[] = ['count', 'sum', 'min', 'max'];

/** A merged group: the `groupBy` columns' values, then each aggregate column's merged value. */
export type AggregateGroup = Record<string, unknown>;

/**
 * Merges rows into one row per group (the values of the `groupBy` columns),
 * holding only the groups, never the rows: memory is bounded by the number
 * of groups, whatever the number of tenants. `count` and `sum` add exactly
 * (decimal strings, see `exact-decimal.ts`); `min` and `max` keep the
 * smallest or largest value, comparing numbers and decimal strings as
 * numbers, dates by time, other strings by code unit (not by collation).
 * SQL NULLs are ignored as SQL aggregates ignore them: a group whose column
 * was NULL everywhere gets `null` (`'0'` for `count`).
 */
export class GroupAggregator {
  readonly #groupBy: readonly string[];
  readonly #aggregates: ReadonlyArray<readonly [string, AggregateFunction]>;
  readonly #groups = new Map<string, Record<string, unknown>>();

  constructor(groupBy: readonly string[], aggregates: Readonly<Record<string, AggregateFunction>>) {
    if (!Array.isArray(groupBy) || groupBy.some((c) => typeof c !== 'string' || c === '')) {
      throw new InvalidArgumentError(`Option "groupBy" must be an array of column names; got ${JSON.stringify(groupBy)}.`);
    }
    if (aggregates === null || typeof aggregates !== 'object' || Object.keys(aggregates).length === 0) {
      throw new InvalidArgumentError('Option "aggregates" must name at least one column and how to merge it, such as { invoices: "count" }.');
    }
    for (const [column, fn] of Object.entries(aggregates)) {
      if (!FUNCTIONS.includes(fn)) {
        throw new InvalidArgumentError(`Aggregate of column "${column}" must be 'count', 'sum', 'min' or 'max'; got ${JSON.stringify(fn)}.`);
      }
      if (groupBy.includes(column)) throw new InvalidArgumentError(`Column "${column}" is both in "groupBy" and in "aggregates": it can only be one.`);
    }
    this.#groupBy = [...groupBy];
    this.#aggregates = Object.entries(aggregates);
  }

  /**
   * Checks one tenant's rows without merging them (so that a bad row fails
   * the tenant with none of its rows merged).
   *
   * @throws InvalidArgumentError naming the column missing from a row, or the value a count or sum cannot add.
   */
  check(rows: readonly Record<string, unknown>[]): void {
    for (const row of rows) {
      for (const column of this.#groupBy) {
        if (!(column in row)) throw new InvalidArgumentError(`The query returned no column "${column}" (named in "groupBy"); its columns are ${Object.keys(row).join(', ')}.`);
      }
      for (const [column, fn] of this.#aggregates) {
        if (!(column in row)) throw new InvalidArgumentError(`The query returned no column "${column}" (named in "aggregates"); its columns are ${Object.keys(row).join(', ')}.`);
        const value = row[column];
        if ((fn === 'count' || fn === 'sum') && value !== null && !isExactDecimal(value)) {
          throw new InvalidArgumentError(`Column "${column}" (${fn}) must hold numbers; got ${JSON.stringify(String(value))}.`);
        }
      }
    }
  }

  /** Merges rows (already `check`ed) into the groups. */
  add(rows: readonly Record<string, unknown>[]): void {
    for (const row of rows) {
      const key = JSON.stringify(this.#groupBy.map((column) => keyPart(row[column])));
      let group = this.#groups.get(key);
      if (group === undefined) {
        group = {};
        for (const column of this.#groupBy) group[column] = row[column];
        for (const [column, fn] of this.#aggregates) group[column] = fn === 'count' ? '0' : null;
        this.#groups.set(key, group);
      }
      for (const [column, fn] of this.#aggregates) group[column] = merge(fn, group[column], row[column]);
    }
  }

  /** The number of groups held. */
  get size(): number {
    return this.#groups.size;
  }

  /** The groups, ordered by their `groupBy` values (so the result does not depend on which tenant finished first). */
  groups(): AggregateGroup[] {
    return [...this.#groups.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, group]) => group);
  }
}

function keyPart(value: unknown): unknown {
  if (value instanceof Date) return `date:${value.toISOString()}`;
  if (typeof value === 'bigint') return value.toString();
  if (value === undefined) return null;
  return value;
}

function merge(fn: AggregateFunction, current: unknown, value: unknown): unknown {
  if (value === null || value === undefined) return current;
  switch (fn) {
    case 'count':
    case 'sum':
      return current === null ? addDecimal('0', value as string) : addDecimal(current as string, value as string);
    case 'min':
      return current === null || compare(value, current) < 0 ? value : current;
    case 'max':
      return current === null || compare(value, current) > 0 ? value : current;
    default:
      throw new Error(`Unexpected aggregate "${fn satisfies never}"`);
  }
}

function compare(a: unknown, b: unknown): number {
  if (a instanceof Date && b instanceof Date) return a.getTime() - b.getTime();
  if (isExactDecimal(a) && isExactDecimal(b)) return compareDecimal(a as string, b as string);
  const x = String(a);
  const y = String(b);
  return x < y ? -1 : x > y ? 1 : 0;
}
