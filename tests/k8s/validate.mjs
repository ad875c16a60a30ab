// Validates Kubernetes manifests against the Kubernetes API's JSON schemas,
// using the kubernetes-models package (one class per apiVersion/kind, each
// checking an object against the OpenAPI schema of that API version).
//
//   node validate.mjs FILE...
//
// Every YAML document of every FILE must parse (duplicate keys are errors)
// and be a kind kubernetes-models knows; prints one line per document.
// Exit 0: all valid; 1: a document is invalid or unknown; 2: usage or I/O.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

async function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" ||
      !/^[a-z0-9.]*\/?v[0-9a-z]+$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind))
    return null;
  try {
    const mod = await import(`kubernetes-models/${apiVersion}/${kind}`);
    return mod[kind] ?? null;
  } catch {
    return null;
  }
}

async function checkDoc(file, i, doc) {
  const where = `${file}#${i + 1}`;
  if (doc.errors.length)
    return `${where}: YAML: ${doc.errors.map((e) => e.message).join("; ")}`;
  const obj = doc.toJS();
  if (obj === null || obj === undefined)
    return null; // an empty document (a trailing ---)
  const name = `${obj.kind ?? "?"} ${obj.metadata?.name ?? "?"}`;
  const Model = await modelFor(obj.apiVersion, obj.kind);
  if (Model === null)
    return `${where} ${name}: unknown apiVersion/kind ${obj.apiVersion}/${obj.kind}`;
  try {
    new Model(obj).validate();
  } catch (e) {
    return `${where} ${name}: ${e.message}`;
  }
  console.log(`ok ${where} ${obj.apiVersion} ${name}`);
  return null;
}

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs FILE...");
  process.exit(2);
}
let bad = 0;
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    console.error(`${file}: ${e.message}`);
    process.exit(2);
  }
  const docs = parseAllDocuments(text, { uniqueKeys: true });
  for (const [i, doc] of docs.entries()) {
    const err = await checkDoc(file, i, doc);
    if (err) {
      console.error(`INVALID ${err}`);
      bad++;
    }
  }
}
process.exit(bad ? 1 : 0);
