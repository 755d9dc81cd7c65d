/**
 * Exact decimal arithmetic on strings, for sums across tenants: PostgreSQL
 * sends `bigint` and `numeric` as strings because a JavaScript number loses
 * digits past 2^53; adding them as BigInts scaled to the longest fraction
 * keeps every digit.
 */

const DECIMAL = /^([+-]?)(\d+)(?:\.(\d*))?$|^([+-]?)\.(\d+)$/;

interface Scaled {
  readonly units: bigint;
  readonly scale: number;
}

/**
 * Whether `value` can take part in an exact sum: a finite number, a bigint,
 * or a decimal string (`'12'`, `'-0.5'`, no exponent).
 */
export function isExactDecimal(value: unknown): boolean {
  if (typeof value === 'bigint') return true;
  if (typeof value === 'number') return Number.isFinite(value) && !/e/i.test(String(value));
  return typeof value === 'string' && DECIMAL.test(value);
}

function scaledOf(value: string | number | bigint): Scaled {
  if (typeof value === 'bigint') return { units: value, scale: 0 };
  const match = DECIMAL.exec(String(value))!;
  const sign = match[1] ?? match[4] ?? '';
  const whole = match[2] ?? '0';
  const fraction = match[3] ?? match[5] ?? '';
  const units = BigInt(whole + fraction);
  return { units: sign === '-' ? -units : units, scale: fraction.length };
}

/** `a + b`, exactly, as a decimal string (`'0.1' + '0.2'` is `'0.3'`). Both must pass `isExactDecimal`. */
export function addDecimal(a: string | number | bigint, b: string | number | bigint): string {
  const x = scaledOf(a);
  const y = scaledOf(b);
  const scale = Math.max(x.scale, y.scale);
  const sum = x.units * 10n ** BigInt(scale - x.scale) + y.units * 10n ** BigInt(scale - y.scale);
  return formatScaled(sum, scale);
}

/** `a` compared with `b` as exact decimals: negative, zero or positive. */
export function compareDecimal(a: string | number | bigint, b: string | number | bigint): number {
  const x = scaledOf(a);
  const y = scaledOf(b);
  const scale = Math.max(x.scale, y.scale);
  const left = x.units * 10n ** BigInt(scale - x.scale);
  const right = y.units * 10n ** BigInt(scale - y.scale);
  return left < right ? -1 : left > right ? 1 : 0;
}

function formatScaled(units: bigint, scale: number): string {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, '0');
  const whole = digits.slice(0, digits.length - scale);
  const fraction = scale === 0 ? '' : `.${digits.slice(digits.length - scale)}`;
  return `${negative ? '-' : ''}${whole}${fraction}`;
}
