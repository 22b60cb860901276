/**
 * An OpenAI-compatible inference request as an SGLang replica must receive it, and what its answers
 * mean for routing (docs/engines/sglang.md).
 */

/**
 * The body to send a replica. SGLang takes the adapter from `model` as `<base>:<adapter>`, split on
 * the first colon (entrypoints/openai/serving_base.py `_parse_model_parameter`; base ids have no
 * colon), and puts usage on every streamed chunk with `continuous_usage_stats`, so that a stream the
 * client cuts is still metered.
 */
export function replicaRequestBody(
  body: Record<string, unknown>,
  loraName: string | null,
  baseModel: string,
): string {
  const out: Record<string, unknown> = {
    ...body,
    model: loraName === null ? baseModel : `${baseModel}:${loraName}`,
  };
  // The adapter comes from `model` alone: a client's own `lora_path` must not pick another one.
  delete out.lora_path;
  if (out.stream === true) {
    out.stream_options = { include_usage: true, continuous_usage_stats: true };
  }
  return JSON.stringify(out);
}

/**
 * A replica that restarted has never loaded the adapter it was routed for: SGLang answers 400 "Got
 * LoRA adapter that has never been loaded" (managers/tokenizer_manager.py) or "… are not loaded"
 * (lora/lora_registry.py `acquire`). An adapter SGLang once loaded is reloaded from its path by the
 * request itself, and when that fails (its files are gone) the answer is 400 "Failed to implicitly
 * load LoRA adapter" (managers/tokenizer_manager.py): lost as well. Either way the request goes
 * elsewhere and the placement is stale.
 */
export function isLostAdapter(status: number, text: string, loraName: string | null): boolean {
  return (
    status === 400 &&
    loraName !== null &&
    (text.includes("has never been loaded") ||
      text.includes("are not loaded") ||
      text.includes("Failed to implicitly load LoRA adapter"))
  );
}
