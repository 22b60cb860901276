export interface ModelIdentity {
  /** e.g. "llama", "qwen", "mistral". */
  family: string;
  /** The family's generation when the name carries one: "3.1" for Llama-3.1, "2.5" for Qwen2.5, "0.3" for Mistral v0.3. */
  version: string | null;
  /** Parameter count as written, lowercased: "7b", "0.5b", "8x7b". */
  size: string | null;
}

/** Checked in order: a distill or derivative that names its parent (DeepSeek-R1-Distill-Qwen) is its own model. */
const FAMILIES: readonly { family: string; token: RegExp }[] = [
  { family: "deepseek", token: /^deepseek/ },
  { family: "nemotron", token: /^nemotron/ },
  { family: "mixtral", token: /^mixtral/ },
  { family: "mistral", token: /^(mistral|ministral)/ },
  { family: "qwen", token: /^(qwen|qwq)/ },
  { family: "llama", token: /^(llama|codellama|tinyllama)/ },
  { family: "gemma", token: /^(gemma|codegemma)/ },
  { family: "phi", token: /^phi(\d+(\.\d+)?)?$/ },
  { family: "falcon", token: /^falcon/ },
  { family: "gpt2", token: /^gpt2/ },
  { family: "pythia", token: /^pythia/ },
  { family: "bloom", token: /^bloom/ },
  { family: "opt", token: /^opt$/ },
  { family: "mpt", token: /^mpt$/ },
  { family: "yi", token: /^yi$/ },
  { family: "internlm", token: /^internlm/ },
  { family: "baichuan", token: /^baichuan/ },
  { family: "glm", token: /^(chat)?glm/ },
  { family: "olmo", token: /^olmo/ },
  { family: "starcoder", token: /^starcoder/ },
  { family: "granite", token: /^granite/ },
  { family: "smollm", token: /^smollm/ },
  { family: "stablelm", token: /^stablelm/ },
  { family: "exaone", token: /^exaone/ },
  { family: "minicpm", token: /^minicpm/ },
  { family: "command", token: /^command$/ },
];

const VERSION = /^\d+(\.\d+)*$/;
const SIZE = /^(\d+x)?\d+(\.\d+)?[bm]$/;

function identifySegment(segment: string): ModelIdentity | null {
  const tokens = segment.toLowerCase().split(/[-_\s]+/);
  for (const { family, token } of FAMILIES) {
    const at = tokens.findIndex((t) => token.test(t));
    if (at === -1) {
      continue;
    }
    const familyToken = tokens[at] ?? "";
    const inline = /^[a-z]+(\d+(?:\.\d+)*)$/.exec(familyToken);
    const next = tokens[at + 1] ?? "";
    const suffixed = tokens.find((t) => /^v\d+(\.\d+)*$/.test(t));
    const version =
      inline?.[1] ??
      (VERSION.test(next) ? next : null) ??
      (suffixed === undefined ? null : suffixed.slice(1));
    const size = tokens.find((t) => SIZE.test(t)) ?? null;
    return { family, version, size };
  }
  return null;
}

/** What model a hub name or local path refers to; null when it names no family we know. */
export function identifyModel(name: string): ModelIdentity | null {
  const segments = name.split(/[/\\]+/).filter((s) => s !== "");
  for (let i = segments.length - 1; i >= 0; i--) {
    const identity = identifySegment((segments[i] ?? "").replace(/^models--.*--/, ""));
    if (identity !== null) {
      return identity;
    }
  }
  return null;
}

export function describeIdentity(identity: ModelIdentity): string {
  return [identity.family, identity.version, identity.size].filter((p) => p !== null).join(" ");
}

/**
 * Why an adapter trained on `adapterBase` cannot serve on `baseName`, or null when it can or we can't tell.
 * Quantization and instruct/base suffixes are ignored, so the full-precision repo of an AWQ base matches;
 * a different family, generation or size does not (a Qwen2 adapter has Qwen2.5's shapes but not its weights).
 */
export function familyMismatch(adapterBase: string, baseName: string): string | null {
  const adapter = identifyModel(adapterBase);
  const base = identifyModel(baseName);
  if (adapter === null || base === null) {
    return null;
  }
  const differs =
    adapter.family !== base.family ||
    (adapter.version !== null && base.version !== null && adapter.version !== base.version) ||
    (adapter.size !== null && base.size !== null && adapter.size !== base.size);
  if (!differs) {
    return null;
  }
  return `expected the base model ${JSON.stringify(baseName)} (${describeIdentity(base)}) or its full-precision repo, found ${JSON.stringify(adapterBase)} (${describeIdentity(adapter)}): the adapter was trained for a different model`;
}
