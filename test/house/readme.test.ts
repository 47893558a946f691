// The README's configuration table is the option table the code uses; the README stays a front
// door (the details are in docs/), and every relative link in it and in docs/ reaches its target.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { configurationTable, optionKeys, optionTable } from '../../src/config/option-table.js';
import { repoRoot } from '../support/test-guest.js';

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');

/** The Markdown files whose links are checked: the README and docs/*.md. */
const markdownFiles = [
  join(repoRoot, 'README.md'),
  ...readdirSync(join(repoRoot, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .map((name) => join(repoRoot, 'docs', name)),
];

/** A file's lines outside fenced code blocks (a `# comment` in a shell example is no heading). */
function proseLines(text: string): string[] {
  let fenced = false;
  return text.split('\n').filter((line) => {
    if (line.startsWith('```')) {
      fenced = !fenced;
      return false;
    }
    return !fenced;
  });
}

/** The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as dashes, repeats numbered. */
function anchorsOf(text: string): Set<string> {
  const seen = new Map<string, number>();
  const anchors = new Set<string>();
  for (const line of proseLines(text)) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line)?.[1];
    if (heading === undefined) continue;
    const slug = heading
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const count = seen.get(slug) ?? 0;
    seen.set(slug, count + 1);
    anchors.add(count === 0 ? slug : `${slug}-${count}`);
  }
  return anchors;
}

/** Every relative link of a file that does not reach an existing file (or a heading of it), as `file: target`. */
function deadLinks(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const dead: string[] = [];
  for (const line of proseLines(text)) {
    for (const [, target = ''] of line.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto: …
      const [path = '', anchor] = target.split('#');
      const resolved = path === '' ? file : join(dirname(file), path);
      const name = `${relative(repoRoot, file)}: ${target}`;
      if (!existsSync(resolved)) dead.push(name);
      else if (anchor !== undefined && (!resolved.endsWith('.md') || !anchorsOf(readFileSync(resolved, 'utf8')).has(anchor)))
        dead.push(name);
    }
  }
  return dead;
}

describe('the README', () => {
  it('holds the configuration table exactly as the option table renders it', () => {
    expect(readme).toContain(`${configurationTable()}\n`);
  });

  it('lists every CLI flag where it lists the flags every command takes', () => {
    const flags = optionKeys.flatMap((key) => (optionTable[key].flag ? [`--${optionTable[key].flag}`] : []));
    const sentence = /Every command takes the flags in the configuration table \(([^)]*)/.exec(readme)?.[1] ?? '';
    expect(
      sentence
        .replace(/`/g, '')
        .split(/\s+/)
        .filter((word) => word.startsWith('--'))
        .map((word) => word.replace(/[,.]$/, '')),
    ).toEqual(flags);
  });

  it('stays a front door of at most 350 lines (the details go to docs/)', () => {
    expect(readme.split('\n').length - (readme.endsWith('\n') ? 1 : 0)).toBeLessThanOrEqual(350);
  });
});

describe('the README and docs/', () => {
  it('link, by relative paths, only to files and headings that exist', () => {
    expect(markdownFiles.flatMap(deadLinks)).toEqual([]);
  });

  it('work as the check expects: a heading is found by its GitHub anchor', () => {
    const anchors = anchorsOf(
      '# After the cluster: waits, exec, logs, port-forward\n## `npm test`\n## CI\n## CI\n```sh\n# not a heading\n```\n',
    );
    expect([...anchors]).toEqual(['after-the-cluster-waits-exec-logs-port-forward', 'npm-test', 'ci', 'ci-1']);
  });
});
