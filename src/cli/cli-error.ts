/**
 * A failure the CLI reports itself (a config that does not load, a refused
 * command), printed as one line `error[ [CODE]]: message` with exit code 1.
 * `code` is set when the failure stands for one of the library's error codes.
 */
export class CliError extends Error {
  override readonly name = 'CliError';
  /** The library error code this failure stands for, if any. */
  readonly code: string | undefined;

  constructor(
    message: string,
    options: { readonly cause?: unknown; readonly code?: string } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = options.code;
  }
}
