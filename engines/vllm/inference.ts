/**
 * An OpenAI-compatible inference request as a vLLM replica must receive it, and what its answers
 * mean for routing (see ../shared/vllm-replica-protocol.md §3 and §5, from vLLM's
 * `vllm/entrypoints/openai/serving_engine.py` `_check_model` and `serving_chat.py`).
 */

/**
 * The body to send a replica: `model` names the LoRA (absent for the base: vLLM serves the base for
 * an absent model, whatever its `--served-model-name`), and a stream always carries cumulative usage
 * on every chunk, so that a stream the client cuts is still metered.
 */
export function replicaRequestBody(body: Record<string, unknown>, loraName: string | null): string {
  const out: Record<string, unknown> = { ...body };
  if (loraName === null) {
    delete out.model;
  } else {
    out.model = loraName;
  }
  if (out.stream === true) {
    out.stream_options = { include_usage: true, continuous_usage_stats: true };
  }
  return JSON.stringify(out);
}

/**
 * A replica that answers 404 "The model `X` does not exist." for a LoRA it was routed for no
 * longer has it registered (it restarted): the request goes elsewhere, and the placement is stale.
 * Any other 404 (a base request, an unknown route) is the request's own answer.
 */
export function isLostAdapter(status: number, text: string, loraName: string | null): boolean {
  return status === 404 && loraName !== null && text.includes("does not exist");
}

/** Each retry is a request of its own to the engine, which names its request after x-request-id. */
export function attemptRequestId(requestId: string, attempt: number): string {
  return attempt === 1 ? requestId : `${requestId}-${attempt}`;
}
