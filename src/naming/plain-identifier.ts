import { TenancyConfigurationError } from '../errors';

const PLAIN_IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Checks an identifier given in the manager's options (shared schema, registry
 * table, search_path extras): lowercase letters, digits and `_`, not starting
 * with a digit, at most 63 characters, so that PostgreSQL neither folds nor
 * truncates it. Throws `TenancyConfigurationError` naming the option.
 */
export function validatePlainIdentifier(value: unknown, option: string): string {
  if (typeof value !== 'string' || !PLAIN_IDENTIFIER.test(value)) {
    throw new TenancyConfigurationError(
      `Option "${option}" must be a plain PostgreSQL identifier (lowercase letters, digits and "_", ` +
        `not starting with a digit, at most 63 characters); got ${JSON.stringify(value) ?? String(value)}.`,
    );
  }
  return value;
}
