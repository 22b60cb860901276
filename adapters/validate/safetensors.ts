import { problem, show, showShape, type ValidationError } from "./errors.ts";

/** Bits per element of every dtype the safetensors format defines (F4/F6 pack below a byte). */
export const SAFETENSORS_DTYPE_BITS = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;

export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPE_BITS;

/** The safetensors library's own limit on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Bytes needed to tell safetensors (u64 length, then `{`) from a pickle or a zip. */
const SNIFF_BYTES = 9;

export interface TensorEntry {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** [begin, end) in bytes, relative to the start of the data section (just after the header). */
  dataOffsets: [number, number];
}

export interface SafetensorsHeader {
  /** N: the JSON header's byte length; the data section starts at 8 + N. */
  headerLength: number;
  metadata: Record<string, string> | null;
  /** Entries that passed every per-entry check, in header order. */
  tensors: TensorEntry[];
  /** Entries already reported as malformed; offsets kept (when readable) for the layout check. */
  malformed: { name: string; dataOffsets: [number, number] | null }[];
}

export interface HeaderParse {
  /** null when the bytes are not a readable safetensors header at all. */
  header: SafetensorsHeader | null;
  errors: ValidationError[];
}

const FILE = "adapter_model";
const CODE_RISK =
  "only safetensors are accepted because loading pickle runs code; re-save it with PEFT's " +
  "save_pretrained(safe_serialization=True) or safetensors.torch.save_file";

function readU64(bytes: Uint8Array): bigint {
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

function looksLikeSafetensors(prefix: Uint8Array, maxHeaderBytes: number): boolean {
  return prefix.length >= SNIFF_BYTES && readU64(prefix) <= BigInt(maxHeaderBytes) && prefix[8] === 0x7b;
}

/**
 * Recognises the formats people upload instead of safetensors from the first bytes (9 are enough).
 * A plausible safetensors start (small length, then `{`) wins, so a header length like 0x0280 is not taken for pickle.
 */
export function detectForeignFormat(
  prefix: Uint8Array,
  maxHeaderBytes: number = MAX_HEADER_BYTES,
): ValidationError | null {
  if (looksLikeSafetensors(prefix, maxHeaderBytes)) {
    return null;
  }
  const [b0, b1, b2, b3] = prefix;
  if (b0 === 0x80 && b1 !== undefined && b1 >= 2 && b1 <= 5) {
    return problem(FILE, null, `this is a pickle (PyTorch .bin/.pt) file (protocol ${b1}); ${CODE_RISK}`);
  }
  if (b0 === 0x50 && b1 === 0x4b && ((b2 === 0x03 && b3 === 0x04) || (b2 === 0x05 && b3 === 0x06))) {
    return problem(
      FILE,
      null,
      `this is a zip (PyTorch .bin/.pt) file, which torch.save fills with pickles; ${CODE_RISK}`,
    );
  }
  return null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

const DTYPE_LIST = Object.keys(SAFETENSORS_DTYPE_BITS).join(", ");

function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === "string" && Object.hasOwn(SAFETENSORS_DTYPE_BITS, value);
}

function checkHeaderLength(
  length: bigint,
  totalSize: number | null,
  maxHeaderBytes: number,
): ValidationError | null {
  if (length > BigInt(maxHeaderBytes)) {
    return problem(
      FILE,
      "header_length",
      `expected at most ${maxHeaderBytes} bytes (the ${maxHeaderBytes === MAX_HEADER_BYTES ? "safetensors" : "adapter header"} limit), ` +
        `found ${length}: not a safetensors file, or a corrupt one`,
    );
  }
  if (totalSize !== null && 8n + length > BigInt(totalSize)) {
    return problem(
      FILE,
      "header_length",
      `expected at most ${Math.max(0, totalSize - 8)} (the bytes after the 8-byte length field), found ${length}: ` +
        `the header runs past the end of the ${totalSize}-byte file (truncated, or not a safetensors file)`,
    );
  }
  return null;
}

function checkMetadata(value: unknown, errors: ValidationError[]): Record<string, string> | null {
  if (value === null) {
    return null;
  }
  if (!isRecord(value)) {
    errors.push(problem(FILE, "__metadata__", `expected an object of string values, found ${show(value)}`));
    return null;
  }
  const metadata: Record<string, string> = {};
  for (const [key, item] of Object.entries(value)) {
    if (typeof item === "string") {
      metadata[key] = item;
    } else {
      errors.push(problem(FILE, `__metadata__.${key}`, `expected a string, found ${show(item)}`));
    }
  }
  return metadata;
}

function readOffsets(value: unknown): [number, number] | null {
  if (!Array.isArray(value) || value.length !== 2) {
    return null;
  }
  const [begin, end] = value;
  return isCount(begin) && isCount(end) && begin <= end ? [begin, end] : null;
}

/** Checks one tensor entry; returns it when every field is well-formed, reporting each bad field. */
function checkEntry(name: string, raw: unknown, errors: ValidationError[]): TensorEntry | null {
  if (!isRecord(raw)) {
    errors.push(problem(FILE, name, `expected an object {dtype, shape, data_offsets}, found ${show(raw)}`));
    return null;
  }
  let ok = true;
  const { dtype, shape, data_offsets: rawOffsets } = raw;
  if (!isDtype(dtype)) {
    errors.push(problem(FILE, name, `dtype: expected one of ${DTYPE_LIST}, found ${show(dtype)}`));
    ok = false;
  }
  const shapeOk = Array.isArray(shape) && shape.every(isCount);
  if (!shapeOk) {
    errors.push(
      problem(FILE, name, `shape: expected an array of non-negative integers, found ${show(shape)}`),
    );
    ok = false;
  }
  const offsets = readOffsets(rawOffsets);
  if (offsets === null) {
    errors.push(
      problem(
        FILE,
        name,
        `data_offsets: expected [begin, end] integers with 0 ≤ begin ≤ end, found ${show(rawOffsets)}`,
      ),
    );
    ok = false;
  }
  if (!ok || !isDtype(dtype) || !shapeOk || offsets === null) {
    return null;
  }
  const dims = shape as number[];
  const bits = dims.reduce((acc, d) => acc * BigInt(d), 1n) * BigInt(SAFETENSORS_DTYPE_BITS[dtype]);
  if (bits % 8n !== 0n) {
    errors.push(
      problem(
        FILE,
        name,
        `shape: ${dtype} × ${showShape(dims)} is ${bits} bits, which does not fill whole bytes`,
      ),
    );
    return null;
  }
  const span = offsets[1] - offsets[0];
  if (BigInt(span) !== bits / 8n) {
    errors.push(
      problem(
        FILE,
        name,
        `data_offsets: expected end - begin = ${bits / 8n} bytes (${dtype} × ${showShape(dims)}), ` +
          `found [${offsets[0]}, ${offsets[1]}] = ${span} bytes`,
      ),
    );
    return null;
  }
  return { name, dtype, shape: dims, dataOffsets: offsets };
}

/** Parses the JSON header from `bytes` (the file's first 8 + N bytes or more); per-entry checks only. */
function parseHeaderJson(bytes: Uint8Array, length: number): HeaderParse {
  const json = bytes.subarray(8, 8 + length);
  const fail = (message: string): HeaderParse => ({
    header: null,
    errors: [problem(FILE, "header", message)],
  });
  if (length === 0) {
    return fail("expected a JSON object, found an empty header (length 0)");
  }
  if (json[0] !== 0x7b) {
    return fail(`expected the JSON header to start with "{", found byte 0x${(json[0] ?? 0).toString(16)}`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(json);
  } catch {
    return fail(`expected UTF-8 JSON in bytes 8..${8 + length}, found invalid UTF-8`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return fail(`expected a JSON object in bytes 8..${8 + length}, found invalid JSON (${reason})`);
  }
  if (!isRecord(parsed)) {
    return fail(`expected a JSON object, found ${Array.isArray(parsed) ? "an array" : typeof parsed}`);
  }
  const errors: ValidationError[] = [];
  let metadata: Record<string, string> | null = null;
  const tensors: TensorEntry[] = [];
  const malformed: SafetensorsHeader["malformed"] = [];
  for (const [name, raw] of Object.entries(parsed)) {
    if (name === "__metadata__") {
      metadata = checkMetadata(raw, errors);
      continue;
    }
    const entry = checkEntry(name, raw, errors);
    if (entry === null) {
      malformed.push({ name, dataOffsets: isRecord(raw) ? readOffsets(raw.data_offsets) : null });
    } else {
      tensors.push(entry);
    }
  }
  return { header: { headerLength: length, metadata, tensors, malformed }, errors };
}

/**
 * The data section must be tiled exactly by the tensors: no overlap, no gap, nothing past the end, nothing
 * left over. Safetensors itself refuses such files; a loader that doesn't could read one tensor's bytes as another's.
 */
export function checkDataLayout(header: SafetensorsHeader, totalSize: number): ValidationError[] {
  const errors: ValidationError[] = [];
  const dataSize = totalSize - 8 - header.headerLength;
  const spans: { name: string; begin: number; end: number }[] = [];
  for (const t of header.tensors) {
    spans.push({ name: t.name, begin: t.dataOffsets[0], end: t.dataOffsets[1] });
  }
  for (const m of header.malformed) {
    if (m.dataOffsets !== null) {
      spans.push({ name: m.name, begin: m.dataOffsets[0], end: m.dataOffsets[1] });
    }
  }
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  // A tensor with unreadable offsets (already reported) covers bytes we can't place: gaps would be noise.
  const allPlaced = header.malformed.every((m) => m.dataOffsets !== null);
  const covered = spans.reduce((max, s) => Math.max(max, s.end), 0);
  if (covered > dataSize) {
    errors.push(
      problem(
        FILE,
        null,
        `truncated: expected ${8 + header.headerLength + covered} bytes (8 + ${header.headerLength} header + ` +
          `${covered} tensor data), found ${totalSize}`,
      ),
    );
  }
  let cursor = 0;
  let last: (typeof spans)[number] | null = null;
  for (const s of spans) {
    if (s.begin > cursor && allPlaced) {
      errors.push(
        problem(
          FILE,
          s.name,
          `data_offsets: expected to start at ${cursor} (right after the previous tensor), found [${s.begin}, ${s.end}]: ` +
            `a gap of ${s.begin - cursor} bytes belongs to no tensor`,
        ),
      );
    } else if (s.begin < cursor && last !== null) {
      errors.push(
        problem(
          FILE,
          s.name,
          `data_offsets: expected to start at ${cursor} or later, found [${s.begin}, ${s.end}], which overlaps ` +
            `${last.name} [${last.begin}, ${last.end}]`,
        ),
      );
    }
    if (s.end > cursor) {
      cursor = s.end;
      last = s;
    }
  }
  if (covered < dataSize && allPlaced) {
    errors.push(
      problem(
        FILE,
        null,
        `expected the tensors to cover the whole ${dataSize}-byte data section, found ${dataSize - covered} ` +
          `trailing bytes after the last tensor that belong to no tensor`,
      ),
    );
  }
  return errors;
}

/**
 * The header's length N from a file's leading bytes, or why there is no readable one. `totalSize`:
 * the file's size when known (a header running past it is an error). Throws when `bytes` hold less
 * than 8 + N: callers pass at least that much.
 */
function readHeaderLength(
  bytes: Uint8Array,
  totalSize: number | null,
  maxHeaderBytes: number,
): { n: number } | { errors: ValidationError[] } {
  const foreign = detectForeignFormat(bytes, maxHeaderBytes);
  if (foreign !== null) {
    return { errors: [foreign] };
  }
  if ((totalSize ?? bytes.length) < 8) {
    if (totalSize === null) {
      throw new RangeError(`need the 8-byte header length, got ${bytes.length} bytes`);
    }
    return {
      errors: [
        problem(
          FILE,
          "header_length",
          `expected an 8-byte little-endian header length, found a ${totalSize}-byte file`,
        ),
      ],
    };
  }
  const length = readU64(bytes);
  const lengthError = checkHeaderLength(length, totalSize, maxHeaderBytes);
  if (lengthError !== null) {
    return { errors: [lengthError] };
  }
  const n = Number(length);
  if (bytes.length < 8 + n) {
    throw new RangeError(
      `need the first ${8 + n} bytes of the file (8 + header length), got ${bytes.length}`,
    );
  }
  return { n };
}

/**
 * Parses a complete header (the file's first 8 + N bytes) before the file's size is known: the
 * checks that need it are `completeHeaderParse`'s. Together they equal `parseSafetensorsHeader`.
 */
export function parseHeaderPrefix(bytes: Uint8Array, maxHeaderBytes: number = MAX_HEADER_BYTES): HeaderParse {
  const read = readHeaderLength(bytes, null, maxHeaderBytes);
  return "errors" in read ? { header: null, errors: read.errors } : parseHeaderJson(bytes, read.n);
}

/** The checks of a header parsed by `parseHeaderPrefix` that need the file's size. */
export function completeHeaderParse(parsed: HeaderParse, totalSize: number): HeaderParse {
  if (parsed.header === null) {
    return parsed;
  }
  const lengthError = checkHeaderLength(
    BigInt(parsed.header.headerLength),
    totalSize,
    Number.MAX_SAFE_INTEGER,
  );
  if (lengthError !== null) {
    return { header: null, errors: [...parsed.errors, lengthError] };
  }
  return { header: parsed.header, errors: [...parsed.errors, ...checkDataLayout(parsed.header, totalSize)] };
}

/**
 * Parses and checks the safetensors header of a `totalSize`-byte file given its leading bytes
 * (at least the first 8 + N, or the whole file when it is shorter than its header claims).
 */
export function parseSafetensorsHeader(
  bytes: Uint8Array,
  totalSize: number,
  maxHeaderBytes: number = MAX_HEADER_BYTES,
): HeaderParse {
  if (bytes.length > totalSize) {
    throw new RangeError(`got ${bytes.length} leading bytes of a file said to be ${totalSize} bytes`);
  }
  const read = readHeaderLength(bytes, totalSize, maxHeaderBytes);
  if ("errors" in read) {
    return { header: null, errors: read.errors };
  }
  const parsed = parseHeaderJson(bytes, read.n);
  if (parsed.header === null) {
    return parsed;
  }
  return { header: parsed.header, errors: [...parsed.errors, ...checkDataLayout(parsed.header, totalSize)] };
}

export type HeaderReadState =
  | { state: "need-more" }
  | { state: "rejected"; errors: ValidationError[] }
  | { state: "complete"; headerLength: number; headerBytes: Uint8Array };

/**
 * Taps a stream of `adapter_model` bytes: feed every chunk to `push`, which keeps only the first 8 + N bytes.
 * `rejected` comes as early as the bytes allow (pickle, zip or an oversized length after 9 bytes, bad JSON
 * at 8 + N) and means the rest is not worth reading; per-tensor problems are left to `validateAdapter`. After the stream, pass `headerBytes` and
 * `bytesSeen` to `validateAdapter` for the full checks, which need the total size.
 */
export class SafetensorsHeaderReader {
  readonly #maxHeaderBytes: number;
  readonly #parseJson: boolean;
  #buffer = new Uint8Array(64);
  #filled = 0;
  #target = SNIFF_BYTES;
  #seen = 0;
  #state: HeaderReadState = { state: "need-more" };

  /** `parseJson: false`: only collects the header's bytes (the caller parses them elsewhere, once). */
  constructor(options: { maxHeaderBytes?: number; parseJson?: boolean } = {}) {
    this.#maxHeaderBytes = options.maxHeaderBytes ?? MAX_HEADER_BYTES;
    this.#parseJson = options.parseJson ?? true;
  }

  /** Every byte pushed so far, kept or not: the file size once the stream has ended. */
  get bytesSeen(): number {
    return this.#seen;
  }

  get state(): HeaderReadState {
    return this.#state;
  }

  push(chunk: Uint8Array): HeaderReadState {
    this.#seen += chunk.length;
    let offset = 0;
    while (this.#state.state === "need-more" && offset < chunk.length) {
      const take = Math.min(this.#target - this.#filled, chunk.length - offset);
      this.#append(chunk.subarray(offset, offset + take));
      offset += take;
      if (this.#filled >= this.#target) {
        this.#advance(false);
      }
    }
    return this.#state;
  }

  /** Call when the stream has ended; a header still incomplete then is a truncated file. */
  end(): HeaderReadState {
    if (this.#state.state === "need-more") {
      this.#advance(true);
    }
    return this.#state;
  }

  #append(bytes: Uint8Array): void {
    const needed = this.#filled + bytes.length;
    if (needed > this.#buffer.length) {
      // Grow geometrically up to the target, never allocating the claimed header size up front.
      const grown = new Uint8Array(Math.min(this.#target, Math.max(needed, this.#buffer.length * 2)));
      grown.set(this.#buffer.subarray(0, this.#filled));
      this.#buffer = grown;
    }
    this.#buffer.set(bytes, this.#filled);
    this.#filled = needed;
  }

  #reject(errors: ValidationError[]): void {
    this.#state = { state: "rejected", errors };
    this.#buffer = new Uint8Array(0);
  }

  #advance(atEnd: boolean): void {
    const prefix = this.#buffer.subarray(0, this.#filled);
    const foreign = detectForeignFormat(prefix, this.#maxHeaderBytes);
    if (foreign !== null) {
      this.#reject([foreign]);
      return;
    }
    if (this.#filled < 8) {
      if (atEnd) {
        this.#reject([
          problem(
            FILE,
            "header_length",
            `expected an 8-byte little-endian header length, found a ${this.#filled}-byte file`,
          ),
        ]);
      }
      return;
    }
    const length = readU64(prefix);
    const lengthError = checkHeaderLength(length, atEnd ? this.#seen : null, this.#maxHeaderBytes);
    if (lengthError !== null) {
      this.#reject([lengthError]);
      return;
    }
    const n = Number(length);
    this.#target = Math.max(SNIFF_BYTES, 8 + n);
    if (this.#filled < 8 + n) {
      return;
    }
    if (this.#parseJson) {
      const parsed = parseHeaderJson(prefix, n);
      if (parsed.header === null) {
        this.#reject(parsed.errors);
        return;
      }
    }
    this.#state = { state: "complete", headerLength: n, headerBytes: prefix.subarray(0, 8 + n) };
  }
}
