// Validate a .glb/.gltf with the Khronos glTF-Validator (npm "gltf-validator", runs offline).
// Usage: node validate_gltf.mjs FILE [MODULES_DIR]; prints the report's JSON on stdout.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import path from "node:path";

const [file, modules] = process.argv.slice(2);
const require = createRequire(path.join(modules || process.cwd(), "noop.js"));
const validator = require("gltf-validator");
const report = await validator.validateBytes(new Uint8Array(readFileSync(file)), {
  uri: path.basename(file),
  maxIssues: 100,
});
process.stdout.write(JSON.stringify(report));
