// Options named in messages the way the user gave them: a remedy says `--timeout=600` to
// someone who passed the flag, `K3S_VM_TIMEOUT=600` to someone who set the variable, and
// `timeoutSeconds: 600` to someone who wrote the option in code.
import { optionTable, type OptionKey } from './option-table.js';

/**
 * How a message names the option: as the user gave it (`--disk-size`, `K3S_VM_DISK_SIZE`,
 * `option diskSizeMiB`) when names says, else by its variable (or as an option, if it has none).
 */
export function settingName(names: Readonly<Partial<Record<OptionKey, string>>>, key: OptionKey): string {
  return names[key] ?? optionTable[key].variable ?? `option ${key}`;
}

/**
 * The option as a setting to write: `--disk-size=4096`, `K3S_VM_DISK_SIZE=4096` or
 * `diskSizeMiB: 4096` (optionValue, when the option's value in code is written otherwise: a list);
 * a boolean flag as `--offline` (on) or `without --offline` (off).
 */
export function setting(
  names: Readonly<Partial<Record<OptionKey, string>>>,
  key: OptionKey,
  value: string | number | boolean,
  optionValue: unknown = value,
): string {
  const name = settingName(names, key);
  if (name.startsWith('option ')) return `${key}: ${JSON.stringify(optionValue)}`;
  // A boolean flag takes no value: on is the flag itself, off is leaving it out.
  if (name.startsWith('--') && typeof value === 'boolean') return value ? name : `without ${name}`;
  const text = typeof value === 'boolean' ? (value ? '1' : '0') : String(value);
  return `${name}=${text}`;
}
