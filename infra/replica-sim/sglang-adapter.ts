import { readFile, stat } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import type { AdapterCheck } from "./adapter-files.ts";

/**
 * How SGLang's scheduler reads an adapter on `/load_lora_adapter`, with its messages
 * (sgl-project/sglang; every message here ends up in `error_message` of a 400):
 *
 * - `LoRAConfig(lora_path)` (python/sglang/srt/lora/lora_config.py @ 84877609): a path that is not a
 *   directory goes to `huggingface_hub.snapshot_download(path, allow_patterns=["*.json"])`, then
 *   `open(join(dir, "adapter_config.json"))` and `json.load`; `r`, `lora_alpha`, `target_modules`
 *   are read by key (a KeyError prints as the quoted key).
 * - `LoRAManager.load_lora_adapter` / `validate_new_adapter` (python/sglang/srt/lora/lora_manager.py,
 *   index excerpt 104396548, commit not given by the index): `except Exception as e` →
 *   `error_message=str(e)`; a duplicate name, a rank above `--max-lora-rank` and the pinned limit
 *   have fixed texts, reproduced in sglang-server.ts.
 *
 * The snapshot_download and weight-loader texts come from huggingface_hub and SGLang's model loader
 * and were not read in this index (README "SGLang mode", unverified).
 */

export type SglangAdapterRead =
  | { ok: true; dir: string; rank: number; targetModules: string[]; weightsFile: string; sizeBytes: number }
  | { ok: false; message: string };

async function isDir(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

async function fileSize(p: string): Promise<number | null> {
  try {
    const s = await stat(p);
    return s.isFile() ? s.size : null;
  } catch {
    return null;
  }
}

/** SGLang keeps `lora_path` as sent; a relative directory is resolved against its working directory. */
export function sglangAdapterDir(loraPath: string, cwd: string): string {
  return isAbsolute(loraPath) ? loraPath : resolve(cwd, loraPath);
}

/** Reads `lora_path` as SGLang's LoRAConfig and weight loader do (offline: the Hub is never reached). */
export async function readSglangAdapter(loraPath: string, cwd: string): Promise<SglangAdapterRead> {
  const dir = sglangAdapterDir(loraPath, cwd);
  if (!(await isDir(dir))) {
    // snapshot_download(repo_id=lora_path): huggingface_hub's validate_repo_id refuses anything with
    // more than one "/" (every absolute path); a plausible "org/name" id fails offline.
    if (loraPath.split("/").length > 2 || loraPath.startsWith("/")) {
      return {
        ok: false,
        message: `Repo id must be in the form 'repo_name' or 'namespace/repo_name': '${loraPath}'. Use \`repo_type\` argument if needed.`,
      };
    }
    return {
      ok: false,
      message:
        "An error happened while trying to locate the files on the Hub and we cannot find the appropriate snapshot folder for the specified revision on the local disk. Please check your internet connection and try again.",
    };
  }
  const configPath = join(dir, "adapter_config.json");
  let raw: string;
  try {
    raw = await readFile(configPath, "utf8");
  } catch {
    return { ok: false, message: `[Errno 2] No such file or directory: '${configPath}'` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return { ok: false, message: "Expecting value: line 1 column 1 (char 0)" };
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return { ok: false, message: "list indices must be integers or slices, not str" };
  }
  const cfg = parsed as Record<string, unknown>;
  for (const key of ["target_modules", "r", "lora_alpha"]) {
    if (!(key in cfg)) {
      return { ok: false, message: `'${key}'` };
    }
  }
  const rank = typeof cfg.r === "number" ? cfg.r : Number.NaN;
  const targets = Array.isArray(cfg.target_modules)
    ? cfg.target_modules.filter((m): m is string => typeof m === "string")
    : typeof cfg.target_modules === "string"
      ? [cfg.target_modules]
      : [];
  for (const name of ["adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt"]) {
    const weightsFile = join(dir, name);
    const size = await fileSize(weightsFile);
    if (size !== null) {
      return { ok: true, dir, rank, targetModules: targets, weightsFile, sizeBytes: size };
    }
  }
  return { ok: false, message: `Cannot find any model weights with \`${dir}\`` };
}

/** The engine's in-step reload of an adapter evicted from its caches: same files, engine's shape. */
export async function engineReadSglang(dir: string): Promise<AdapterCheck> {
  const r = await readSglangAdapter(dir, "/");
  if (!r.ok) {
    return { ok: false, kind: "invalid", message: r.message };
  }
  return { ok: true, dir: r.dir, rank: r.rank, weightsFile: r.weightsFile, sizeBytes: r.sizeBytes };
}
