#!/usr/bin/env node
// The bin is an application entry point, not library code: like any TypeORM
// app it loads reflect-metadata once, before the config module's entities.
import 'reflect-metadata';
import { Console } from 'node:console';
import { runCli } from './run-cli';

// stdout carries only the command's result (JSON a script can parse): what
// else writes to the console, such as TypeORM's migration log or the config
// module, goes to stderr.
globalThis.console = new Console({ stdout: process.stderr, stderr: process.stderr });

void runCli(process.argv.slice(2)).then((code) => {
  // No process.exit(): the manager is destroyed, so the process ends by itself
  // once stdout is flushed (a hang here would mean a leaked pool or timer).
  process.exitCode = code;
});
