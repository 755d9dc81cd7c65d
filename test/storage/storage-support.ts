import { S3Client } from '@aws-sdk/client-s3';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A temporary folder under os.tmpdir() (its real path), removed by `removeTemp()`. */
export function makeTemp(label: string): string {
  return realpathSync(mkdtempSync(join(tmpdir(), `tt-storage-${label}-`)));
}

export function removeTemp(path: string | undefined): void {
  if (path !== undefined) rmSync(path, { recursive: true, force: true });
}

/** Every regular file and symlink under `folder`, as paths relative to it, sorted. */
export async function filesUnder(folder: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (path: string, relative: string): Promise<void> => {
    let entries;
    try {
      entries = await fsp.readdir(path, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      const childRelative = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) await walk(join(path, entry.name), childRelative);
      else found.push(childRelative);
    }
  };
  await walk(folder, '');
  return found.sort();
}

/** A running s3rver (a stand-in for S3) in a child process. */
export interface LoopbackS3 {
  readonly endpoint: string;
  readonly directory: string;
  /** A client of it: path-style, dummy credentials, us-east-1, checksums only when required. */
  client(): S3Client;
  stop(): Promise<void>;
}

/** Starts s3rver on 127.0.0.1 (port picked by the OS) over a fresh temporary folder, with `buckets` created. */
export async function startLoopbackS3(buckets: readonly string[]): Promise<LoopbackS3> {
  const directory = makeTemp('s3rver');
  const child: ChildProcess = spawn(process.execPath, ['--openssl-legacy-provider', join(__dirname, 's3rver-process.js'), directory, ...buckets], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let output = '';
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`s3rver exited with code ${code} before it listened`)));
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const line = output.split('\n')[0];
      if (output.includes('\n')) resolve((JSON.parse(line!) as { port: number }).port);
    });
  });
  child.removeAllListeners('exit');
  const endpoint = `http://127.0.0.1:${port}`;
  const clients: S3Client[] = [];
  return {
    endpoint,
    directory,
    client() {
      const client = new S3Client({
        endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
      });
      clients.push(client);
      return client;
    },
    async stop() {
      for (const client of clients) client.destroy();
      if (child.exitCode === null) {
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.stdin!.end();
        await exited;
      }
      removeTemp(directory);
    },
  };
}
