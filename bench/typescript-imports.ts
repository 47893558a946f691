// Lets Node's type stripping run the test helpers, which import their siblings as './x.js' the way
// tsc wants it: a relative .js that does not exist, imported from a .ts file, is looked up as .ts.
// Imported first by every bench file that loads TypeScript from test/.
import { registerHooks } from 'node:module';

registerHooks({
  resolve(specifier, context, nextResolve) {
    try {
      return nextResolve(specifier, context);
    } catch (error) {
      if (!specifier.startsWith('.') || !specifier.endsWith('.js') || !context.parentURL?.endsWith('.ts')) throw error;
      return nextResolve(`${specifier.slice(0, -'.js'.length)}.ts`, context);
    }
  },
});
