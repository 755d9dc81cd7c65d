import type { TenancyLogEntry } from '../manager/tenancy-logger';
import { FleetProgress, type ProgressStream } from './fleet-progress';
import { formatErrorLine, formatLogEntry } from './text-format';

/** The streams and terminal facts the CLI writes to; `process`'s by default, fakes in tests. */
export interface CliStreams {
  readonly stdout: NodeJS.WritableStream & { readonly isTTY?: boolean };
  readonly stderr: ProgressStream;
}

/** How results are printed: JSON for machines, text (and progress bars) for people. */
export interface OutputOptions {
  /** `--json`: JSON even on a terminal. */
  readonly json?: boolean;
  /** `--verbose`: stacks with errors, every tenant in reports. */
  readonly verbose?: boolean;
}

/** A log entry as the JSON report carries it: the entry without its error object (its message says it), parameters only when they serialise. */
export interface LogEntryJson {
  readonly level: TenancyLogEntry['level'];
  readonly source: TenancyLogEntry['source'];
  readonly kind: TenancyLogEntry['kind'];
  readonly message: string;
  readonly schema?: string;
  readonly tenant?: string;
  readonly query?: string;
  readonly parameters?: unknown;
  readonly durationMs?: number;
}

/**
 * Decides between JSON and text once: JSON when `--json` is given or stdout
 * is not a terminal (a pipe, a file, CI), readable text otherwise. Results go
 * to stdout, errors and progress to stderr, so `... --json | jq` always gets
 * clean JSON.
 */
export class Output {
  readonly json: boolean;
  readonly verbose: boolean;
  readonly #streams: CliStreams;
  #progress: FleetProgress | undefined;
  /** Log entries kept for the JSON result of the command running, while it keeps them. */
  #kept: LogEntryJson[] | undefined;

  constructor(streams: CliStreams, options: OutputOptions = {}) {
    this.#streams = streams;
    this.json = options.json === true || streams.stdout.isTTY !== true;
    this.verbose = options.verbose === true;
  }

  /** Prints a command's result: `value` as JSON, or the text `render` makes of it. */
  result<T>(value: T, render: (value: T) => string): void {
    this.#streams.stdout.write(this.json ? `${JSON.stringify(value, null, 2)}\n` : render(value));
  }

  /** Prints `text` on stdout as it is, in either mode: for a format the user asked for by name (`exec --csv`). */
  write(text: string): void {
    this.#streams.stdout.write(text);
  }

  /** A progress bar on stderr for a fleet run, or `undefined` in JSON mode or when stderr is no terminal. */
  progress(label: string): FleetProgress | undefined {
    if (this.json || this.#streams.stderr.isTTY !== true) return undefined;
    this.#progress = new FleetProgress(this.#streams.stderr, label);
    return this.#progress;
  }

  /**
   * The CLI's logger: an entry of TypeORM or the library. Kept for the JSON
   * result while a command keeps them (`keepLogs()`), so stdout stays one
   * JSON document; otherwise one line on stderr, drawn above the progress
   * bar while one is drawn.
   */
  log(entry: TenancyLogEntry): void {
    if (this.#kept !== undefined) {
      this.#kept.push(logEntryJson(entry));
      return;
    }
    const line = formatLogEntry(entry);
    if (this.#progress !== undefined) this.#progress.log(line);
    else this.#streams.stderr.write(line);
  }

  /** In JSON mode, keeps the log entries from now on for `takeLogs()` and returns true; in text mode returns false (they are printed). */
  keepLogs(): boolean {
    if (!this.json) return false;
    this.#kept ??= [];
    return true;
  }

  /** The entries kept since `keepLogs()`; later ones are printed on stderr again. */
  takeLogs(): LogEntryJson[] {
    const kept = this.#kept ?? [];
    this.#kept = undefined;
    return kept;
  }

  /** For a command that fails before its result: prints the kept entries on stderr, since no JSON result will carry them. */
  flushLogs(): void {
    const kept = this.takeLogs();
    for (const entry of kept) this.#streams.stderr.write(formatLogEntry(entry));
  }

  /** A note for the person at the terminal (stderr; also in JSON mode, where stdout is reserved). */
  note(message: string): void {
    this.#streams.stderr.write(`${message}\n`);
  }

  /** The one-line error (with the stack under `--verbose`). */
  error(error: unknown): void {
    this.#streams.stderr.write(formatErrorLine(error, this.verbose));
  }
}

function logEntryJson(entry: TenancyLogEntry): LogEntryJson {
  const { level, source, kind, message, schema, tenant, query, parameters, durationMs } = entry;
  const json: { -readonly [K in keyof LogEntryJson]: LogEntryJson[K] } = { level, source, kind, message };
  if (schema !== undefined) json.schema = schema;
  if (tenant !== undefined) json.tenant = tenant;
  if (query !== undefined) json.query = query;
  if (parameters !== undefined) {
    // Parameters may hold what JSON cannot (a circular object, a BigInt): the report must still print.
    try {
      json.parameters = JSON.parse(JSON.stringify(parameters)) as unknown;
    } catch {
      json.parameters = String(parameters);
    }
  }
  if (durationMs !== undefined) json.durationMs = durationMs;
  return json;
}
