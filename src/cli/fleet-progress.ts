import { Console } from 'node:console';
import { Writable } from 'node:stream';
import { MultiBar, type SingleBar } from 'cli-progress';

/** Where the progress bar is drawn: a terminal stream (stderr, so stdout stays clean). */
export interface ProgressStream extends NodeJS.WritableStream {
  readonly isTTY?: boolean;
  readonly columns?: number;
  cursorTo?(x: number, y?: number, callback?: () => void): boolean;
  clearLine?(dir: -1 | 0 | 1, callback?: () => void): boolean;
  moveCursor?(dx: number, dy: number, callback?: () => void): boolean;
}

/**
 * A cli-progress bar fed by a fleet run's `onProgress`: tenants processed of
 * the total, with counts of those done and failed. The total is known only
 * once the run has decided which tenants to process, so the bar starts at
 * the first result. Nothing is drawn when `stream` is not a terminal.
 * While the bar is drawn, the CLI's log lines (`log()`) are printed above
 * it instead of through it; so is console output, as a safety net for
 * whatever still writes there (TypeORM's default logger prints a failing
 * migration with `console.log`; the CLI gives the manager its own logger).
 */
export class FleetProgress {
  readonly #stream: ProgressStream;
  readonly #label: string;
  #bars: MultiBar | undefined;
  #bar: SingleBar | undefined;
  #console: Console | undefined;
  #done = 0;
  #failed = 0;

  constructor(stream: ProgressStream, label: string) {
    this.#stream = stream;
    this.#label = label;
  }

  /** Feeds one tenant's result (of a fleet run or a fan-out); pass it as (or from) the run's `onProgress`. */
  update<R extends { readonly slug: string; readonly status: string }>(result: R, processed: number, total: number): void {
    if (result.status === 'failed') this.#failed += 1;
    else this.#done += 1;
    if (this.#bars === undefined) {
      this.#bars = new MultiBar({
        stream: this.#stream as NodeJS.WritableStream,
        format: `${this.#label} [{bar}] {value}/{total} | done {done} | failed {failed} | {slug}`,
        barsize: 30,
        hideCursor: true,
        clearOnComplete: false,
        fps: 10,
      });
      this.#bar = this.#bars.create(total, 0, { done: 0, failed: 0, slug: '' });
      const bars = this.#bars;
      this.#console = globalThis.console;
      const above = new Writable({
        write(chunk: Buffer | string, _encoding, callback): void {
          bars.log(String(chunk));
          callback();
        },
      });
      globalThis.console = new Console({ stdout: above, stderr: above });
    }
    this.#bar!.update(processed, { done: this.#done, failed: this.#failed, slug: result.slug });
  }

  /** Prints a line (ending with a newline) above the bar while it is drawn, else on the stream. */
  log(line: string): void {
    if (this.#bars !== undefined) this.#bars.log(line);
    else this.#stream.write(line);
  }

  /** Draws the last state and releases the terminal (cursor shown, timer stopped). Safe to call twice. */
  stop(): void {
    if (this.#console !== undefined) globalThis.console = this.#console;
    this.#console = undefined;
    // Lines logged since the last redraw wait in cli-progress's buffer, which stop() would drop: redraw once first.
    this.#bars?.update();
    this.#bars?.stop();
    this.#bars = undefined;
    this.#bar = undefined;
  }
}
