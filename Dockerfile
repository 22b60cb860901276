# syntax=docker/dockerfile:1.7
# loraplane: one image, one entry point; the command picks the process:
#   docker run loraplane api | scheduler | metering | agent | migrate | token | replica-sim [flags]
# Node 24 runs the TypeScript sources directly (type stripping): there is no build step to ship.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; install scripts stay off (none of ours need one).
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    AGENT_HOST=0.0.0.0 \
    NODE_OPTIONS=--enable-source-maps
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json ./
COPY --chown=root:root lib ./lib
COPY --chown=root:root engines ./engines
COPY --chown=root:root db ./db
COPY --chown=root:root api ./api
COPY --chown=root:root scheduler ./scheduler
COPY --chown=root:root adapters ./adapters
COPY --chown=root:root metering ./metering
COPY --chown=root:root infra/replica-sim ./infra/replica-sim
COPY --chown=root:root infra/docker ./infra/docker
# The code is read-only to the process; the agent's cache is a mounted volume, created here so that
# a new named volume takes the node user's ownership.
RUN mkdir -p /var/lib/loraplane/adapters && chown node:node /var/lib/loraplane/adapters
USER node
EXPOSE 8080 8091 9464
ENTRYPOINT ["/usr/bin/tini", "--", "node", "infra/docker/entrypoint.ts"]
CMD ["api"]
