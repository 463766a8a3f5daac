// Validates External Secrets Operator resources against ESO's own CRD schemas
// (@kubernetes-models/external-secrets). Reads a JSON array of manifests on stdin;
// prints a JSON array of {index, kind, name, error}; an unknown kind is an error.
import { readFileSync } from "node:fs";

const manifests = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const [index, manifest] of manifests.entries()) {
  const [group, version] = manifest.apiVersion.split("/");
  const name = manifest.metadata?.name;
  try {
    const module = await import(`@kubernetes-models/external-secrets/${group}/${version}/${manifest.kind}`);
    new module[manifest.kind](manifest).validate();
  } catch (error) {
    problems.push({ index, kind: manifest.kind, name, error: String(error.message ?? error) });
  }
}
process.stdout.write(JSON.stringify(problems));
