// Lint rules, and the layer order of src/ (docs/how-it-works.md: lower layers never import upper ones;
// adapters use only the cluster API plus errors and logging).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const layers = ['config', 'state', 'nix', 'qemu', 'guest', 'kube', 'readiness', 'cluster', 'adapters'];

/** For src/<layer>/**: every layer above it is off limits. */
const layerRules = layers.map((layer, index) => ({
  files: [`src/${layer}/**/*.ts`],
  rules: {
    'no-restricted-imports': [
      'error',
      {
        patterns: [
          {
            group: layers.slice(index + 1).map((upper) => `**/${upper}/**`),
            message: `src/${layer} is below ${layers.slice(index + 1).join(', ')} and must not import them (docs/how-it-works.md).`,
          },
        ],
      },
    ],
  },
}));

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'fixtures/**/node_modules/**', '**/.vitest-cache/**', 'fixtures/test-guest/result*'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: 'readonly',
        console: 'readonly',
        Buffer: 'readonly',
        URL: 'readonly',
        AbortController: 'readonly',
        AbortSignal: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        structuredClone: 'readonly',
        TextDecoder: 'readonly',
        TextEncoder: 'readonly',
        queueMicrotask: 'readonly',
        setImmediate: 'readonly',
        fetch: 'readonly',
        performance: 'readonly',
      },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true, caughtErrors: 'none' },
      ],
      'no-empty': ['error', { allowEmptyCatch: true }],
      // Terminal escape sequences are stripped from logs on purpose.
      'no-control-regex': 'off',
    },
  },
  {
    // The fake API's tests read its answers as loose JSON, the way a client would see them.
    files: ['test/fixtures/**/*.ts'],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
  ...layerRules,
  {
    files: ['src/adapters/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/config/**',
                '**/state/**',
                '**/nix/**',
                '**/qemu/**',
                '**/guest/**',
                '**/kube/**',
                '**/readiness/**',
                '**/cluster/**',
                '!**/cluster/index.js',
              ],
              message: 'adapters use only the cluster API (src/cluster/index.ts), errors and logging (docs/how-it-works.md).',
            },
          ],
        },
      ],
    },
  },
);
