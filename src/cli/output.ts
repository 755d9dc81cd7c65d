import { FleetProgress, type ProgressStream } from './fleet-progress';
import { formatErrorLine } from './text-format';

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

  constructor(streams: CliStreams, options: OutputOptions = {}) {
    this.#streams = streams;
    this.json = options.json === true || streams.stdout.isTTY !== true;
    this.verbose = options.verbose === true;
  }

  /** Prints a command's result: `value` as JSON, or the text `render` makes of it. */
  result<T>(value: T, render: (value: T) => string): void {
    this.#streams.stdout.write(this.json ? `${JSON.stringify(value, null, 2)}\n` : render(value));
  }

  /** A progress bar on stderr for a fleet run, or `undefined` in JSON mode or when stderr is no terminal. */
  progress(label: string): FleetProgress | undefined {
    if (this.json || this.#streams.stderr.isTTY !== true) return undefined;
    return new FleetProgress(this.#streams.stderr, label);
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
