import { open, readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";

/** What vLLM's worker makes of an adapter directory when `add_lora` reads it. */
export type AdapterCheck =
  | { ok: true; dir: string; rank: number; weightsFile: string; sizeBytes: number }
  /** vLLM raises FileNotFoundError → LoRAAdapterNotFoundError (HTTP 404). */
  | { ok: false; kind: "not_found" }
  /** Any other failure; `message` is the inner text that follows `Call to add_lora method failed: `. */
  | { ok: false; kind: "invalid"; message: string };

export interface ModuleDims {
  in: number;
  out: number;
}

export interface AdapterRules {
  maxLoraRank: number;
  /** In-features and out-features of every LoRA-targetable linear suffix of the base model. */
  moduleDims: Readonly<Record<string, ModuleDims>>;
  /** The list vLLM prints in its unexpected-module error (packed names first). */
  expectedModules: readonly string[];
}

/** Llama-3.1-8B (and its AWQ builds): hidden 4096, 8 KV heads of 128, MLP 14336. */
export const LLAMA_31_8B_MODULES: Readonly<Record<string, ModuleDims>> = {
  q_proj: { in: 4096, out: 4096 },
  k_proj: { in: 4096, out: 1024 },
  v_proj: { in: 4096, out: 1024 },
  o_proj: { in: 4096, out: 4096 },
  gate_proj: { in: 4096, out: 14336 },
  up_proj: { in: 4096, out: 14336 },
  down_proj: { in: 14336, out: 4096 },
};

export const LLAMA_EXPECTED_MODULES = [
  "qkv_proj",
  "o_proj",
  "gate_up_proj",
  "down_proj",
  "q_proj",
  "k_proj",
  "v_proj",
  "gate_proj",
  "up_proj",
] as const;

/**
 * vLLM's `get_adapter_absolute_path`: absolute paths are kept, `~` is expanded, a relative path
 * that exists is made absolute; anything else would be a Hugging Face Hub id. The replica is
 * offline, so the download fails and the string comes back unchanged (and then is not found).
 */
export async function resolveLoraPath(loraPath: string, cwd: string): Promise<string> {
  if (isAbsolute(loraPath)) {
    return loraPath;
  }
  if (loraPath.startsWith("~")) {
    return join(homedir(), loraPath.slice(1));
  }
  const local = resolve(cwd, loraPath);
  if (await exists(local)) {
    return local;
  }
  return loraPath;
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function isFile(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

/** Python's `repr` of a list or set of strings, as vLLM's messages print them. */
export function pyStrList(items: readonly string[], brackets: "[]" | "{}" = "[]"): string {
  const body = items.map((s) => `'${s}'`).join(", ");
  return `${brackets[0]}${body}${brackets[1]}`;
}

function pyJsonError(text: string, err: unknown): string {
  // Python's json module says where it stopped; JSON.parse's wording differs, the position mostly agrees.
  const msg = err instanceof Error ? err.message : "";
  const m = /position (\d+)/.exec(msg);
  const pos = m?.[1] ? Number(m[1]) : 0;
  const before = text.slice(0, pos);
  const line = before.split("\n").length;
  const col = pos - before.lastIndexOf("\n");
  return `Expecting value: line ${line} column ${col} (char ${pos})`;
}

/**
 * Reads `adapter_config.json` and the weights header the way vLLM's `_load_adapter` does, in the
 * same order, and fails with the same inner message. Only the safetensors header is read.
 */
export async function checkAdapterDir(dir: string, rules: AdapterRules): Promise<AdapterCheck> {
  let raw: string;
  try {
    raw = await readFile(join(dir, "adapter_config.json"), "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
      return { ok: false, kind: "not_found" };
    }
    const file = join(dir, "adapter_config.json");
    const text =
      code === "EISDIR" ? `[Errno 21] Is a directory: '${file}'` : `[Errno 13] Permission denied: '${file}'`;
    return { ok: false, kind: "invalid", message: text };
  }
  let config: unknown;
  try {
    config = JSON.parse(raw);
  } catch (err) {
    return { ok: false, kind: "invalid", message: pyJsonError(raw, err) };
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    return { ok: false, kind: "invalid", message: "list indices must be integers or slices, not str" };
  }
  const cfg = config as Record<string, unknown>;
  const missing = ["r", "lora_alpha", "target_modules"].filter((k) => !(k in cfg));
  if (missing.length > 0) {
    return {
      ok: false,
      kind: "invalid",
      message: `Missing required configuration fields: ${pyStrList(missing, "{}")}`,
    };
  }
  const r = cfg.r;
  if (typeof r !== "number" || !Number.isInteger(r)) {
    return {
      ok: false,
      kind: "invalid",
      message: `unsupported operand type(s) for /: 'int' and '${pyType(r)}'`,
    };
  }
  if (r === 0) {
    return { ok: false, kind: "invalid", message: "division by zero" };
  }
  const problems: string[] = [];
  const modulesToSave = cfg.modules_to_save;
  if (Array.isArray(modulesToSave) ? modulesToSave.length > 0 : Boolean(modulesToSave)) {
    problems.push("vLLM only supports modules_to_save being None.");
  }
  if (cfg.use_dora === true) {
    problems.push("vLLM does not yet support DoRA.");
  }
  if (r > rules.maxLoraRank) {
    problems.push(`LoRA rank ${r} is greater than max_lora_rank ${rules.maxLoraRank}.`);
  }
  if (cfg.bias !== undefined && cfg.bias !== "none") {
    problems.push("Adapter bias is not supported.");
  }
  if (problems.length > 0) {
    return { ok: false, kind: "invalid", message: problems.join(" ") };
  }
  return checkWeights(dir, r, rules);
}

function pyType(v: unknown): string {
  if (typeof v === "string") {
    return "str";
  }
  if (typeof v === "number") {
    return "float";
  }
  if (typeof v === "boolean") {
    return "bool";
  }
  if (Array.isArray(v)) {
    return "list";
  }
  return v === null ? "NoneType" : "dict";
}

async function checkWeights(dir: string, rank: number, rules: AdapterRules): Promise<AdapterCheck> {
  const st = join(dir, "adapter_model.safetensors");
  if (await isFile(st)) {
    const header = await readSafetensorsHeader(st);
    if (!header.ok) {
      return { ok: false, kind: "invalid", message: header.message };
    }
    const unexpected: string[] = [];
    for (const [name, info] of header.tensors) {
      if (name.includes("base_layer")) {
        continue;
      }
      const parsed = parseLoraTensorName(name);
      if (!parsed) {
        return { ok: false, kind: "invalid", message: `${name} is unsupported LoRA weight` };
      }
      const suffix = parsed.module.split(".").at(-1) ?? "";
      if (!rules.expectedModules.includes(suffix)) {
        unexpected.push(parsed.module);
        continue;
      }
      const dims = rules.moduleDims[suffix];
      const mismatch = dims ? shapeMismatch(parsed.part, info.shape, dims, rules.maxLoraRank) : null;
      if (mismatch) {
        return { ok: false, kind: "invalid", message: mismatch };
      }
    }
    if (unexpected.length > 0) {
      return {
        ok: false,
        kind: "invalid",
        message:
          `While loading ${dir}, expected target modules in ${pyStrList(rules.expectedModules)} but received ` +
          `${pyStrList(unexpected)}. Please verify that the loaded LoRA module is correct`,
      };
    }
    return { ok: true, dir, rank, weightsFile: st, sizeBytes: header.fileSize };
  }
  for (const name of ["adapter_model.bin", "adapter_model.pt"]) {
    const p = join(dir, name);
    if (await isFile(p)) {
      return { ok: true, dir, rank, weightsFile: p, sizeBytes: (await stat(p)).size };
    }
  }
  return { ok: false, kind: "invalid", message: `${dir} doesn't contain tensors` };
}

// Weights are copied into buffers padded to max_lora_rank and the base layer's dims: a smaller
// tensor fits, a larger one makes torch's copy_ fail with its size-mismatch message.
function shapeMismatch(
  part: "A" | "B",
  shape: readonly number[],
  dims: ModuleDims,
  maxRank: number,
): string | null {
  const [d0 = 0, d1 = 0] = shape;
  const limits = part === "A" ? [maxRank, dims.in] : [dims.out, maxRank];
  const [l0 = 0, l1 = 0] = limits;
  if (d1 > l1) {
    return `The size of tensor a (${l1}) must match the size of tensor b (${d1}) at non-singleton dimension 1`;
  }
  if (d0 > l0) {
    return `The size of tensor a (${l0}) must match the size of tensor b (${d0}) at non-singleton dimension 0`;
  }
  return null;
}

function parseLoraTensorName(name: string): { module: string; part: "A" | "B" } | null {
  const m = /^(?:base_model\.model\.)?(.+)\.lora_(A|B)(?:\.weight)?$/.exec(name);
  if (m?.[1] && (m[2] === "A" || m[2] === "B")) {
    return { module: m[1], part: m[2] };
  }
  const emb = /^(?:base_model\.model\.)?(.+)\.lora_embedding_(A|B)$/.exec(name);
  if (emb?.[1] && (emb[2] === "A" || emb[2] === "B")) {
    return { module: emb[1], part: emb[2] };
  }
  return null;
}

export interface TensorInfo {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

type HeaderResult =
  | { ok: true; tensors: Map<string, TensorInfo>; fileSize: number }
  | { ok: false; message: string };

const MAX_HEADER_BYTES = 100_000_000;

/** Parses only the JSON header of a safetensors file (8-byte little-endian length, then JSON). */
export async function readSafetensorsHeader(path: string): Promise<HeaderResult> {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    if (size < 8) {
      return { ok: false, message: "Error while deserializing header: HeaderTooSmall" };
    }
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (len > MAX_HEADER_BYTES) {
      return { ok: false, message: "Error while deserializing header: HeaderTooLarge" };
    }
    if (8 + len > size) {
      return { ok: false, message: "Error while deserializing header: InvalidHeaderLength" };
    }
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, 8);
    let parsed: unknown;
    try {
      parsed = JSON.parse(buf.toString("utf8"));
    } catch {
      return { ok: false, message: "Error while deserializing header: InvalidHeaderDeserialization" };
    }
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
      return { ok: false, message: "Error while deserializing header: InvalidHeaderDeserialization" };
    }
    const tensors = new Map<string, TensorInfo>();
    for (const [key, value] of Object.entries(parsed)) {
      if (key === "__metadata__") {
        continue;
      }
      const info = value as Partial<TensorInfo>;
      if (!Array.isArray(info.shape) || !Array.isArray(info.data_offsets) || typeof info.dtype !== "string") {
        return { ok: false, message: "Error while deserializing header: InvalidHeaderDeserialization" };
      }
      const end = info.data_offsets[1];
      if (typeof end !== "number" || 8 + len + end > size) {
        return { ok: false, message: "Error while deserializing header: MetadataIncompleteBuffer" };
      }
      tensors.set(key, { dtype: info.dtype, shape: info.shape, data_offsets: info.data_offsets });
    }
    return { ok: true, tensors, fileSize: size };
  } finally {
    await fh.close();
  }
}
