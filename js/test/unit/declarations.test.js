// The TypeScript declarations (index.d.ts) against the module itself: what
// a TypeScript user is told exists must exist, and what the module exports
// must be declared. Nothing here compiles TypeScript; it reads the
// declaration file as text, which is enough to catch a renamed or dropped
// export or method (the drift that has bitten clients of other brokers).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as herald from "../../src/index.js";

const dts = readFileSync(new URL("../../index.d.ts", import.meta.url), "utf8");

/** Names of the values `index.d.ts` declares (classes, functions, consts). */
function declaredValues() {
  return [...dts.matchAll(/^export declare (?:class|function|const) (\w+)/gm)].map((m) => m[1]);
}

/** The method names declared in the body of `export declare class NAME`. */
function declaredMethods(name) {
  const start = dts.indexOf(`export declare class ${name} `);
  assert.ok(start >= 0, `class ${name} is declared`);
  const end = dts.indexOf("\n}\n", start);
  const body = dts.slice(dts.indexOf("{", start) + 1, end);
  const methods = new Set();
  for (const m of body.matchAll(/^ {2}(\w+)(?:<[^>]*>)?\(/gm)) methods.add(m[1]);
  return [...methods];
}

test("every value index.d.ts declares is exported, and every export is declared", () => {
  const declared = declaredValues().sort();
  const exported = Object.keys(herald).sort();
  assert.deepEqual(declared, exported);
});

test("every method a declared class lists exists on that class", () => {
  const classes = [...dts.matchAll(/^export declare class (\w+)/gm)].map((m) => m[1]);
  assert.ok(classes.length >= 5, `found the declared classes: ${classes}`);
  let checked = 0;
  for (const name of classes) {
    const cls = herald[name];
    assert.equal(typeof cls, "function", `${name} is a class`);
    for (const method of declaredMethods(name)) {
      // EventTarget's own methods are declared again for their event types.
      const where = method === "addEventListener" ? EventTarget.prototype : cls.prototype;
      assert.equal(typeof where[method], "function", `${name}.prototype.${method} is a method`);
      checked++;
    }
  }
  // The Herald class alone declares about thirty (39 in all): a parse that found
  // nothing would pass the loop above without checking anything.
  assert.ok(checked >= 30, `checked ${checked} declared methods`);
});
