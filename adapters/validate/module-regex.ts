/** Longest pattern accepted from an adapter_config. */
const MAX_PATTERN_LENGTH = 256;
/** Module paths are under ~48 characters, so an unbounded quantifier can try at most about that many lengths. */
const UNBOUNDED_BRANCHING = 48;
/** Worst-case backtracking steps per module path we are willing to spend on one of a tenant's regexes. */
const MAX_COST = 300_000;
/** The same for all the patterns of one adapter_config together (rank_pattern can list every module). */
export const MAX_CONFIG_REGEX_COST = 2_000_000;

/** `cost`: the estimated worst-case steps per module path, for budgeting all of a config's patterns together. */
export type CompiledRegex =
  | { regex: RegExp; cost: number; error?: never }
  | { regex?: never; cost?: never; error: string };

/**
 * Compiles a regex from an adapter_config (PEFT uses Python `re`) to match module paths such as
 * `model.layers.3.self_attn.q_proj`. `fullmatch` mirrors `re.fullmatch` (target_modules, exclude_modules);
 * `suffix` mirrors PEFT's rank_pattern/alpha_pattern rule `re.match(rf"(.*\.)?({key})$", name)`.
 * Tenants control the pattern and the API runs it, so patterns that could backtrack for long are refused:
 * quantified groups, back-references, and too many nested choices.
 */
export function compileModuleRegex(pattern: string, mode: "fullmatch" | "suffix"): CompiledRegex {
  if (pattern.length > MAX_PATTERN_LENGTH) {
    return { error: `expected a regex of at most ${MAX_PATTERN_LENGTH} characters, found ${pattern.length}` };
  }
  const source = pattern.replaceAll("(?P<", "(?<");
  const cost = estimateCost(source);
  if (typeof cost === "string") {
    return { error: `regex ${JSON.stringify(pattern)} is not accepted: ${cost}` };
  }
  const total = mode === "suffix" ? cost * UNBOUNDED_BRANCHING : cost;
  if (total > MAX_COST) {
    return {
      error: `regex ${JSON.stringify(pattern)} is not accepted: too many nested wildcards or alternatives (it could backtrack for a long time)`,
    };
  }
  const wrapped = mode === "fullmatch" ? `^(?:${source})$` : `^(?:.*\\.)?(?:${source})$`;
  try {
    return { regex: new RegExp(wrapped, "u"), cost: total };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return { error: `regex ${JSON.stringify(pattern)} does not compile (${reason})` };
  }
}

/** A rough upper bound on backtracking: the product of the choices each quantifier and alternation adds. */
function estimateCost(source: string): number | string {
  const groups: { alternatives: number; cost: number }[] = [{ alternatives: 1, cost: 1 }];
  let previous: "atom" | "group" | "quantifier" | null = null;
  let i = 0;
  const current = () => groups[groups.length - 1] ?? { alternatives: 1, cost: 1 };
  while (i < source.length) {
    const c = source[i];
    if (c === "\\") {
      const next = source[i + 1] ?? "";
      if (/[1-9]/.test(next) || next === "k") {
        return "back-references are not supported";
      }
      i += 2;
      previous = "atom";
      continue;
    }
    if (c === "[") {
      let j = i + 1;
      if (source[j] === "^") {
        j++;
      }
      if (source[j] === "]") {
        j++;
      }
      while (j < source.length && source[j] !== "]") {
        j += source[j] === "\\" ? 2 : 1;
      }
      i = j + 1;
      previous = "atom";
      continue;
    }
    if (c === "(") {
      if (source.startsWith("(?P=", i)) {
        return "back-references are not supported";
      }
      groups.push({ alternatives: 1, cost: 1 });
      previous = null;
      i++;
      continue;
    }
    if (c === ")") {
      const group = groups.pop();
      if (group === undefined || groups.length === 0) {
        return "unbalanced parentheses";
      }
      current().cost *= group.cost * group.alternatives;
      previous = "group";
      i++;
      continue;
    }
    if (c === "|") {
      current().alternatives++;
      previous = null;
      i++;
      continue;
    }
    const quantifier = readQuantifier(source, i);
    if (quantifier !== null) {
      if (previous === "group") {
        return "quantified groups such as (...)* or (...)+ are not supported";
      }
      if (previous === "atom") {
        current().cost *= quantifier.branching;
      }
      previous = "quantifier";
      i = quantifier.end;
      if (source[i] === "?" || source[i] === "+") {
        i++;
      }
      continue;
    }
    previous = "atom";
    i++;
  }
  if (groups.length !== 1) {
    return "unbalanced parentheses";
  }
  const top = current();
  return top.cost * top.alternatives;
}

function readQuantifier(source: string, at: number): { branching: number; end: number } | null {
  const c = source[at];
  if (c === "*" || c === "+") {
    return { branching: UNBOUNDED_BRANCHING, end: at + 1 };
  }
  if (c === "?") {
    return { branching: 2, end: at + 1 };
  }
  if (c === "{") {
    const match = /^\{(\d*)(,?)(\d*)\}/.exec(source.slice(at));
    if (match === null) {
      return null;
    }
    const [text, min, comma, max] = match;
    const low = Number(min || "0");
    const branching =
      comma === ""
        ? 1
        : max === ""
          ? UNBOUNDED_BRANCHING
          : Math.min(UNBOUNDED_BRANCHING, Number(max) - low + 1);
    return { branching: Math.max(1, branching), end: at + text.length };
  }
  return null;
}
