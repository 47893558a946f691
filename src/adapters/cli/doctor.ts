// `k3s-vm doctor`: prints the library's checks, each with its fix.
import { diagnose, type ClusterOptions } from '../../cluster/index.js';
import { colours, exitCodes, type CliIo } from './io.js';

export async function printDoctor(options: ClusterOptions, io: CliIo): Promise<number> {
  const c = colours(io);
  const checks = await diagnose(options);
  const width = Math.max(...checks.map((check) => check.name.length));
  for (const check of checks) {
    const mark = check.level === 'ok' ? c.green('ok  ') : check.level === 'warn' ? c.yellow('warn') : c.red('FAIL');
    io.stdout.write(`${mark} ${check.name.padEnd(width)}  ${check.detail}\n`);
    if (check.fix && check.level !== 'ok') io.stdout.write(`     ${' '.repeat(width)}  ${c.dim(`fix: ${check.fix}`)}\n`);
  }
  return checks.some((check) => check.level === 'fail') ? exitCodes.failure : exitCodes.ok;
}
