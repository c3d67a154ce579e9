// Node loader hooks for the built worker: `import m from "./index.wasm"` gives a compiled
// `WebAssembly.Module`, as the Workers runtime's module rules do (Node's own wasm imports give an
// instance instead).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export async function load(url, context, next) {
  if (!url.endsWith(".wasm")) return next(url, context);
  const path = fileURLToPath(url);
  const source =
    `import { readFileSync } from "node:fs";\n` +
    `export default new WebAssembly.Module(readFileSync(${JSON.stringify(path)}));\n`;
  readFileSync(path); // fail here, naming the file, if the build is missing
  return { format: "module", source, shortCircuit: true };
}
