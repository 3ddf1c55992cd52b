/**
 * Subject transforms against nats-server: every expected subject below is
 * what nats-server 2.9.10 produced for the same mapping (account
 * `mappings`), except left/right, which 2.9 lacks (nats-server 2.10's
 * definition). The error texts are nats-server's.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { SubjectTransform, TransformError } from "../src/subjects/transform.js";

const map = (src: string, dest: string, subject: string): string | null => SubjectTransform.parse(src, dest).match(subject);

describe("subject transforms", () => {
  test("wildcards, partitions and the token functions map as nats-server maps them", () => {
    const cases: Array<[string, string, string, string]> = [
      ["pa.*.*", "pa.{{partition(7,1,2)}}.{{wildcard(2)}}.{{wildcard(1)}}", "pa.alpha.beta", "pa.3.beta.alpha"],
      ["pa.*.*", "pa.{{partition(7,1,2)}}.{{wildcard(2)}}.{{wildcard(1)}}", "pa.x.y", "pa.4.y.x"],
      ["pa.*.*", "pa.{{partition(7,1,2)}}.{{wildcard(2)}}.{{wildcard(1)}}", "pa.héllo.z", "pa.2.z.héllo"],
      ["sl.*", "sl.{{splitFromLeft(1,2)}}", "sl.abcde", "sl.ab.cde"],
      ["sr.*", "sr.{{splitFromRight(1,2)}}", "sr.abcde", "sr.abc.de"],
      ["cl.*", "cl.{{sliceFromLeft(1,2)}}", "cl.abcde", "cl.ab.cd.e"],
      ["cl.*", "cl.{{sliceFromLeft(1,2)}}", "cl.abcd", "cl.ab.cd"],
      ["cr.*", "cr.{{sliceFromRight(1,2)}}", "cr.abcde", "cr.a.bc.de"],
      ["cr.*", "cr.{{sliceFromRight(1,2)}}", "cr.abcd", "cr.ab.cd"],
      ["sp.*", "sp.{{split(1,-)}}", "sp.a-b--c-", "sp.a.b.c"],
      ["sp.*", "sp.{{split(1,-)}}", "sp.-a", "sp.a"],
      ["dl.*.>", "dl.$1.>", "dl.q.r.s.t", "dl.q.r.s.t"],
      ["le.*", "le.{{left(1,2)}}", "le.abcde", "le.ab"],
      ["ri.*", "ri.{{right(1,2)}}", "ri.abcde", "ri.de"],
      ["ri.*", "ri.{{ Right( 1, 9 ) }}", "ri.abc", "ri.abc"],
      [">", "out.>", "a.b", "out.a.b"],
      ["", "copy.>", "x", "copy.x"],
    ];
    for (const [src, dest, subject, want] of cases) assert.equal(map(src, dest, subject), want, `${src} -> ${dest} on ${subject}`);
  });

  test("a subject outside the source is not matched; a literal `$` token stays literal", () => {
    assert.equal(map("a.*", "b.$1", "c.x"), null);
    assert.equal(map("a.*", "b.$1", "a.x.y"), null);
    assert.equal(map("a.>", "$KV.b.>", "a.k"), "$KV.b.k");
  });

  test("bad transforms are refused with nats-server's texts", () => {
    const err = (src: string, dest: string): string => {
      try {
        SubjectTransform.parse(src, dest);
      } catch (e) {
        assert.ok(e instanceof TransformError);
        return e.message;
      }
      throw new Error(`${src} -> ${dest} was accepted`);
    };
    assert.equal(err("a.*", "b.*"), "invalid subject");
    assert.equal(err("a.>", "b.c"), "invalid subject");
    assert.equal(err("a..b", "c"), "invalid subject");
    assert.equal(err("a.*", "b.$2"), "invalid mapping destination: wildcard index out of range in $2: [2]");
    assert.equal(err("a.b", "c.{{wildcard(1)}}"), "invalid mapping destination: wildcard index out of range in {{wildcard(1)}}");
    assert.equal(err("a.*", "c.{{nope(1)}}"), "invalid mapping destination: unknown function in {{nope(1)}}");
    assert.equal(err("a.*", "c.{{wildcard()}}"), "invalid mapping destination: not enough arguments passed to the function in {{wildcard()}}");
    assert.equal(err("a.*", "c.{{split(1)}}"), "invalid mapping destination: not enough arguments passed to the function in {{split(1)}}");
    assert.equal(err("a.*", "c.{{left(x,2)}}"), "invalid mapping destination: function argument is invalid or in the wrong format in {{left(x,2)}}");
  });
});
