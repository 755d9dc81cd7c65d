import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { platform } from 'node:os';

/**
 * True while a process with this pid runs. A process of another user counts
 * (EPERM); a zombie (exited, not yet reaped by its parent) does not: in a
 * container whose init reaps nothing, a killed server stays a zombie.
 */
export function processRuns(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return platform() !== 'linux' || !isZombie(pid);
}

/** The command line of a running process (arguments joined by spaces), or undefined when it is gone. */
export function commandLineOf(pid: number): string | undefined {
  if (platform() === 'linux') {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim();
    } catch {
      return undefined; // exited meanwhile
    }
  }
  try {
    return execFileSync('ps', ['-p', String(pid), '-o', 'command='], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined; // ps exits with 1 when there is no such process
  }
}

function isZombie(pid: number): boolean {
  try {
    // "pid (comm) S ...": the state follows the last ')' (comm may hold spaces and parentheses).
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return true; // gone between kill(0) and the read
  }
}
