import { describe, expect, it } from "vitest";
import { encodeHeader, picklePayload, zipPayload } from "../../test/fixtures/generate.ts";
import {
  detectForeignFormat,
  MAX_HEADER_BYTES,
  parseSafetensorsHeader,
  SafetensorsHeaderReader,
} from "./safetensors.ts";

/** A safetensors file: the encoded header followed by `dataSize` zero bytes. */
function file(header: Record<string, unknown>, dataSize: number): Uint8Array {
  return Buffer.concat([encodeHeader(header), Buffer.alloc(dataSize)]);
}

/** A file whose header bytes are exactly `json` (no padding), for malformed headers. */
function rawFile(json: string | Uint8Array, dataSize = 0): Uint8Array {
  const body = typeof json === "string" ? Buffer.from(json, "utf8") : Buffer.from(json);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(body.length));
  return Buffer.concat([length, body, Buffer.alloc(dataSize)]);
}

function parse(bytes: Uint8Array) {
  return parseSafetensorsHeader(bytes, bytes.length);
}

function lines(bytes: Uint8Array): string[] {
  return parse(bytes).errors.map((e) => `${e.path}: ${e.message}`);
}

const f16 = (shape: number[], begin: number) => ({
  dtype: "F16",
  shape,
  data_offsets: [begin, begin + 2 * shape.reduce((a, b) => a * b, 1)],
});

/** Written by Python safetensors 0.8 `save_file({"a": f16[3], "b": f32[1], "c": u8[5]})`: it sorts by alignment, then pads. */
const PYTHON_WRITTEN = Buffer.from(
  "a8000000000000007b2262223a7b226474797065223a22463332222c227368617065223a5b315d2c22646174615f6f666673657473223a5b302c345d7d2c2261223a7b226474797065223a22463136222c227368617065223a5b335d2c22646174615f6f666673657473223a5b342c31305d7d2c2263223a7b226474797065223a225538222c227368617065223a5b355d2c22646174615f6f666673657473223a5b31302c31355d7d7d2020202020200000803f003c003c003c0101010101",
  "hex",
);

describe("parseSafetensorsHeader", () => {
  it("reads the tensors, metadata and header length of a well-formed file", () => {
    const bytes = file({ __metadata__: { format: "pt" }, "w.a": f16([2, 3], 0), "w.b": f16([3, 2], 12) }, 24);
    const { header, errors } = parse(bytes);
    expect(errors).toEqual([]);
    expect(header?.metadata).toEqual({ format: "pt" });
    expect(header?.headerLength).toBe(bytes.length - 8 - 24);
    expect(header?.tensors).toEqual([
      { name: "w.a", dtype: "F16", shape: [2, 3], dataOffsets: [0, 12] },
      { name: "w.b", dtype: "F16", shape: [3, 2], dataOffsets: [12, 24] },
    ]);
  });

  it("accepts a file written by the Python safetensors library, whose data order differs from its key order", () => {
    const { header, errors } = parse(PYTHON_WRITTEN);
    expect(errors).toEqual([]);
    expect(header?.tensors.map((t) => [t.name, t.dtype, t.dataOffsets])).toEqual([
      ["b", "F32", [0, 4]],
      ["a", "F16", [4, 10]],
      ["c", "U8", [10, 15]],
    ]);
  });

  it("reads only the leading bytes it is given when the total size is passed separately", () => {
    const bytes = file({ x: f16([4], 0) }, 8);
    const headerOnly = bytes.subarray(0, bytes.length - 8);
    expect(parseSafetensorsHeader(headerOnly, bytes.length).errors).toEqual([]);
  });

  it("throws when the caller passes fewer than 8 + N bytes of a file that is long enough", () => {
    const bytes = file({ x: f16([4], 0) }, 8);
    expect(() => parseSafetensorsHeader(bytes.subarray(0, 20), bytes.length)).toThrow(RangeError);
  });

  it("accepts zero-size tensors and an empty header object", () => {
    expect(
      lines(file({ empty: { dtype: "F32", shape: [0, 4], data_offsets: [0, 0] }, x: f16([2], 0) }, 4)),
    ).toEqual([]);
    expect(lines(rawFile("{}"))).toEqual([]);
  });

  it("accepts metadata set to null and trailing space padding after the JSON", () => {
    expect(lines(rawFile('{"__metadata__":null}   '))).toEqual([]);
  });

  it("does not take a header length whose first byte is 0x80 followed by 0x02 for a pickle", () => {
    const base = Buffer.from(JSON.stringify({ __metadata__: { pad: "" } })).length;
    const header = { __metadata__: { pad: "x".repeat(0x0280 - base) } };
    const bytes = rawFile(JSON.stringify(header));
    expect([bytes[0], bytes[1]]).toEqual([0x80, 0x02]);
    expect(lines(bytes)).toEqual([]);
  });
});

describe("foreign formats", () => {
  it("recognises a pickle (legacy torch.save) from its first bytes and says why it is refused", () => {
    expect(detectForeignFormat(picklePayload())).toEqual({
      path: "adapter_model",
      message: expect.stringMatching(
        /^this is a pickle \(PyTorch \.bin\/\.pt\) file \(protocol 2\); only safetensors are accepted because loading pickle runs code/,
      ),
    });
  });

  it("recognises a zip (torch.save's default format)", () => {
    expect(lines(zipPayload())).toEqual([
      expect.stringMatching(
        /^adapter_model: this is a zip \(PyTorch \.bin\/\.pt\) file.*loading pickle runs code/,
      ),
    ]);
  });

  it("recognises a pickle shorter than the 9 bytes a safetensors check needs", () => {
    expect(lines(Buffer.from([0x80, 0x04, 0x4b, 0x01, 0x2e]))[0]).toMatch(/^adapter_model: this is a pickle/);
  });

  it("leaves other garbage to the header checks", () => {
    expect(detectForeignFormat(Buffer.from("GGUF\x03\x00\x00\x00\x00"))).toBeNull();
  });
});

describe("header length", () => {
  it("rejects a file shorter than the 8-byte length field", () => {
    expect(lines(Buffer.from([1, 2, 3]))).toEqual([
      "adapter_model:header_length: expected an 8-byte little-endian header length, found a 3-byte file",
    ]);
  });

  it("rejects a length over the 100 MB limit without needing the bytes", () => {
    const bytes = Buffer.alloc(16);
    bytes.writeBigUInt64LE(BigInt(MAX_HEADER_BYTES + 1));
    bytes[8] = 0x7b;
    expect(parseSafetensorsHeader(bytes, 10_000_000_000).errors).toEqual([
      {
        path: "adapter_model:header_length",
        message: `expected at most 100000000 bytes (the safetensors limit), found 100000001: not a safetensors file, or a corrupt one`,
      },
    ]);
  });

  it("rejects a length that runs past the end of the file", () => {
    const bytes = rawFile('{"a":1}');
    bytes[0] = 200;
    expect(lines(bytes)).toEqual([
      "adapter_model:header_length: expected at most 7 (the bytes after the 8-byte length field), found 200: the header runs past the end of the 15-byte file (truncated, or not a safetensors file)",
    ]);
  });
});

describe("header JSON", () => {
  it("rejects a header that does not start with {", () => {
    expect(lines(rawFile(' {"a": 1}'))).toEqual([
      'adapter_model:header: expected the JSON header to start with "{", found byte 0x20',
    ]);
  });

  it("rejects an empty header", () => {
    expect(lines(rawFile(""))).toEqual([
      "adapter_model:header: expected a JSON object, found an empty header (length 0)",
    ]);
  });

  it("rejects invalid UTF-8", () => {
    expect(lines(rawFile(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d])))).toEqual([
      "adapter_model:header: expected UTF-8 JSON in bytes 8..16, found invalid UTF-8",
    ]);
  });

  it("rejects invalid JSON and quotes the parser", () => {
    expect(lines(rawFile('{"a": [1, 2'))[0]).toMatch(
      /^adapter_model:header: expected a JSON object in bytes 8\.\.19, found invalid JSON \(.+\)$/,
    );
  });

  it("rejects metadata that is not an object of strings, naming the key", () => {
    expect(lines(rawFile('{"__metadata__":{"format":"pt","step":3}}'))).toEqual([
      "adapter_model:__metadata__.step: expected a string, found 3",
    ]);
    expect(lines(rawFile('{"__metadata__":["pt"]}'))).toEqual([
      'adapter_model:__metadata__: expected an object of string values, found ["pt"]',
    ]);
  });
});

describe("tensor entries", () => {
  it("rejects an entry that is not an object", () => {
    expect(lines(rawFile('{"w":[1,2]}'))).toEqual([
      "adapter_model:w: expected an object {dtype, shape, data_offsets}, found [1,2]",
    ]);
  });

  it("rejects an unknown dtype, listing the valid ones", () => {
    expect(lines(file({ w: { dtype: "Q4_K", shape: [2], data_offsets: [0, 2] } }, 2))).toEqual([
      expect.stringMatching(
        /^adapter_model:w: dtype: expected one of BOOL, .*F16, BF16, .*F32, .* found "Q4_K"$/,
      ),
    ]);
  });

  it("rejects negative, fractional and missing shapes", () => {
    expect(lines(file({ w: { dtype: "U8", shape: [-1], data_offsets: [0, 0] } }, 0))).toEqual([
      "adapter_model:w: shape: expected an array of non-negative integers, found [-1]",
    ]);
    expect(lines(file({ w: { dtype: "U8", shape: [1.5], data_offsets: [0, 0] } }, 0))[0]).toContain(
      "found [1.5]",
    );
    expect(lines(file({ w: { dtype: "U8", data_offsets: [0, 0] } }, 0))[0]).toContain(
      "shape: expected an array of non-negative integers, found nothing (field missing)",
    );
  });

  it("rejects malformed data_offsets", () => {
    for (const offsets of [[0], [4, 2], [0, "2"], "0-2"]) {
      expect(lines(file({ w: { dtype: "U8", shape: [2], data_offsets: offsets } }, 2))).toEqual([
        `adapter_model:w: data_offsets: expected [begin, end] integers with 0 ≤ begin ≤ end, found ${JSON.stringify(offsets)}`,
      ]);
    }
  });

  it("rejects offsets whose span disagrees with dtype × shape, with both byte counts", () => {
    expect(lines(file({ w: { dtype: "BF16", shape: [4, 8], data_offsets: [0, 32] } }, 32))).toEqual([
      "adapter_model:w: data_offsets: expected end - begin = 64 bytes (BF16 × [4, 8]), found [0, 32] = 32 bytes",
    ]);
  });

  it("sizes sub-byte dtypes in bits and rejects shapes that do not fill whole bytes", () => {
    expect(lines(file({ w: { dtype: "F4", shape: [6], data_offsets: [0, 3] } }, 3))).toEqual([]);
    expect(lines(file({ w: { dtype: "F4", shape: [3], data_offsets: [0, 2] } }, 2))).toEqual([
      "adapter_model:w: shape: F4 × [3] is 12 bits, which does not fill whole bytes",
    ]);
  });

  it("reports every malformed entry, not only the first", () => {
    const errors = parse(
      file(
        {
          a: { dtype: "X", shape: [1], data_offsets: [0, 2] },
          b: { dtype: "F16", shape: [1], data_offsets: [2, 3] },
          c: { dtype: "F16", shape: "1", data_offsets: [3, 5] },
        },
        5,
      ),
    ).errors;
    expect(errors.map((e) => e.path)).toEqual(["adapter_model:a", "adapter_model:b", "adapter_model:c"]);
  });

  it("keeps malformed entries out of the tensor list but remembers their offsets", () => {
    const { header } = parse(
      file({ a: { dtype: "X", shape: [1], data_offsets: [0, 2] }, b: f16([1], 2) }, 4),
    );
    expect(header?.tensors.map((t) => t.name)).toEqual(["b"]);
    expect(header?.malformed).toEqual([{ name: "a", dataOffsets: [0, 2] }]);
  });
});

describe("data layout", () => {
  it("rejects overlapping tensors, naming both", () => {
    expect(lines(file({ a: f16([4], 0), b: f16([4], 6) }, 14))).toEqual([
      "adapter_model:b: data_offsets: expected to start at 8 or later, found [6, 14], which overlaps a [0, 8]",
    ]);
  });

  it("rejects a gap between tensors", () => {
    expect(lines(file({ a: f16([4], 0), b: f16([4], 12) }, 20))).toEqual([
      "adapter_model:b: data_offsets: expected to start at 8 (right after the previous tensor), found [12, 20]: a gap of 4 bytes belongs to no tensor",
    ]);
  });

  it("rejects a gap before the first tensor", () => {
    expect(lines(file({ a: f16([4], 2) }, 10))[0]).toMatch(/^adapter_model:a: .*a gap of 2 bytes/);
  });

  it("rejects bytes after the last tensor", () => {
    expect(lines(file({ a: f16([4], 0) }, 11))).toEqual([
      "adapter_model: expected the tensors to cover the whole 11-byte data section, found 3 trailing bytes after the last tensor that belong to no tensor",
    ]);
  });

  it("rejects a truncated file with the size it should have", () => {
    const bytes = file({ a: f16([4], 0), b: f16([4], 8) }, 16);
    const cut = bytes.subarray(0, bytes.length - 5);
    expect(lines(cut)).toEqual([
      `adapter_model: truncated: expected ${bytes.length} bytes (8 + ${bytes.length - 24} header + 16 tensor data), found ${cut.length}`,
    ]);
  });

  it("orders by offset, not by header order", () => {
    expect(lines(file({ b: f16([4], 8), a: f16([4], 0) }, 16))).toEqual([]);
  });
});

describe("SafetensorsHeaderReader", () => {
  const bytes = Buffer.concat([
    encodeHeader({ __metadata__: { format: "pt" }, a: f16([64], 0), b: f16([64], 128) }),
    Buffer.alloc(256, 7),
  ]);
  const headerEnd = bytes.length - 256;

  it("needs more bytes until it has 8 + N, then holds exactly the header even when fed byte by byte", () => {
    const reader = new SafetensorsHeaderReader();
    for (let i = 0; i < headerEnd - 1; i++) {
      expect(reader.push(bytes.subarray(i, i + 1)).state).toBe("need-more");
    }
    const done = reader.push(bytes.subarray(headerEnd - 1, headerEnd));
    expect(done.state).toBe("complete");
    if (done.state === "complete") {
      expect(Buffer.from(done.headerBytes)).toEqual(bytes.subarray(0, headerEnd));
      expect(done.headerLength).toBe(headerEnd - 8);
    }
    reader.push(bytes.subarray(headerEnd));
    expect(reader.bytesSeen).toBe(bytes.length);
    expect(reader.end().state).toBe("complete");
  });

  it("keeps only the header when the whole file arrives in one chunk", () => {
    const reader = new SafetensorsHeaderReader();
    const state = reader.push(bytes);
    expect(state.state === "complete" && state.headerBytes.length).toBe(headerEnd);
    expect(
      parseSafetensorsHeader(state.state === "complete" ? state.headerBytes : bytes, reader.bytesSeen).errors,
    ).toEqual([]);
  });

  it("rejects a pickle as soon as 9 bytes have arrived", () => {
    const reader = new SafetensorsHeaderReader();
    const pickle = Buffer.concat([picklePayload(), Buffer.alloc(1000)]);
    expect(reader.push(pickle.subarray(0, 8)).state).toBe("need-more");
    const state = reader.push(pickle.subarray(8, 9));
    expect(state.state === "rejected" && state.errors[0]?.message).toMatch(/^this is a pickle/);
    expect(reader.push(pickle.subarray(9)).state).toBe("rejected");
  });

  it("rejects a zip as soon as 9 bytes have arrived", () => {
    const state = new SafetensorsHeaderReader().push(zipPayload().subarray(0, 9));
    expect(state.state === "rejected" && state.errors[0]?.message).toMatch(/^this is a zip/);
  });

  it("rejects an oversized header length without buffering it", () => {
    const reader = new SafetensorsHeaderReader({ maxHeaderBytes: 1000 });
    const head = Buffer.alloc(9);
    head.writeBigUInt64LE(1001n);
    head[8] = 0x7b;
    const state = reader.push(head);
    expect(state.state === "rejected" && state.errors[0]?.path).toBe("adapter_model:header_length");
  });

  it("rejects bad JSON once the header is complete, before any data", () => {
    const bad = rawFile('{"a": nope}', 100);
    const state = new SafetensorsHeaderReader().push(bad.subarray(0, bad.length - 100));
    expect(state.state === "rejected" && state.errors[0]?.path).toBe("adapter_model:header");
  });

  it("leaves per-entry problems to the full check", () => {
    const state = new SafetensorsHeaderReader().push(
      file({ w: { dtype: "Q4", shape: [1], data_offsets: [0, 1] } }, 1),
    );
    expect(state.state).toBe("complete");
  });

  it("reports a stream that ends inside the header as truncated", () => {
    const reader = new SafetensorsHeaderReader();
    reader.push(bytes.subarray(0, 40));
    expect(reader.end()).toEqual({
      state: "rejected",
      errors: [
        {
          path: "adapter_model:header_length",
          message: `expected at most 32 (the bytes after the 8-byte length field), found ${headerEnd - 8}: the header runs past the end of the 40-byte file (truncated, or not a safetensors file)`,
        },
      ],
    });
  });

  it("recognises a short pickle at the end of the stream", () => {
    const reader = new SafetensorsHeaderReader();
    reader.push(Buffer.from([0x80, 0x03, 0x4e, 0x2e]));
    const state = reader.end();
    expect(state.state === "rejected" && state.errors[0]?.message).toMatch(/^this is a pickle/);
  });

  it("reports a stream of fewer than 8 bytes", () => {
    const reader = new SafetensorsHeaderReader();
    reader.push(Buffer.from([1, 2]));
    expect(reader.end().state).toBe("rejected");
  });
});
