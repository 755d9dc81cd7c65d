/**
 * Runs s3rver (a stand-in for S3, not S3 itself) in a child process on
 * 127.0.0.1 with a port the OS picks, storing objects in the folder given as
 * the first argument, with the buckets named in the others. It prints
 * `{"port":N}` on stdout once listening, and stops when its stdin closes
 * (the parent test ended or died) or on SIGTERM.
 *
 * A child process because s3rver 3.7 makes its ListObjectsV2 continuation
 * tokens with DES, which OpenSSL 3 (Node 17+) only has in its legacy
 * provider: the child runs with `--openssl-legacy-provider`, the test
 * process does not.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require('s3rver');

async function main(): Promise<void> {
  const [directory, ...buckets] = process.argv.slice(2);
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: buckets.map((name) => ({ name })),
  });
  const address = (await server.run()) as { port: number };
  let closing = false;
  const stop = async (): Promise<void> => {
    if (closing) return;
    closing = true;
    await server.close();
    process.exit(0);
  };
  process.stdin.on('end', () => void stop());
  process.stdin.on('close', () => void stop());
  process.stdin.resume();
  process.on('SIGTERM', () => void stop());
  process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
