# syntax=docker/dockerfile:1.7
#
# One image for the whole Parley fleet; the app is chosen by the first argument:
#   docker run --rm ghcr.io/parley/parley:<tag> message-router
# The operator tools run the same way: `... parley:<tag> dlq replay --topic <topic>` (tools/dlq).
# (Kubernetes: `args: ["message-router"]`; docker-compose: `command: ["message-router"]`.)
# Why one image and not eight: the apps share nearly all of their dependencies, so one image is one
# build, one vulnerability scan and one tag to roll forward or back (the fleet moves together, and
# the Kafka contracts in libs/contracts stay in step); nodes pull the node_modules layer once.
# The apps' bundles are ~100 KB each, so an app-per-image split would save almost nothing.
#
# Stages: deps (production node_modules) -> build (esbuild bundles of apps + @parley/* libs)
#         -> runtime (node:20 slim, non-root, read-only friendly).

ARG NODE_IMAGE=node:20.20.2-bookworm-slim

# --- production dependencies only ------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --no-audit --no-fund \
 && rm -rf node_modules/.cache

# --- bundle each app with esbuild --------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --no-audit --no-fund
COPY tsconfig.base.json ./
COPY libs ./libs
COPY apps ./apps
COPY tools/dlq ./tools/dlq
COPY tools/deploy-check/bundle.mjs ./tools/deploy-check/bundle.mjs
# Bundles the project's TypeScript (tsconfig paths resolved) into dist/apps/<app>.js and
# <tool>.js; npm packages stay external and come from the deps stage. Then a smoke check: every
# bundle must load all its modules and reach configuration parsing (exit 2 on a deliberately bad
# LOG_LEVEL).
RUN node tools/deploy-check/bundle.mjs dist/apps \
 && for f in dist/apps/*.js; do \
      LOG_LEVEL=not-a-level node "$f" >/dev/null 2>&1; rc=$?; \
      [ "$rc" = 2 ] || { echo "bundle $f does not load (exit $rc)"; exit 1; }; \
    done

# --- runtime -----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
# PARLEY_ENV=production: the image refuses the public development secrets and DEV_MODE unless told
# it runs for development (docker-compose.yml and the dev overlay say so).
ENV NODE_ENV=production \
    PARLEY_ENV=production \
    NODE_OPTIONS=--enable-source-maps
WORKDIR /app
# Everything is owned by root and read-only for the app user: the container can run with a
# read-only root filesystem (the apps write nothing when DATABASE_URL/REDIS_URL are set).
COPY --from=deps /src/node_modules ./node_modules
COPY --from=deps /src/package.json ./package.json
COPY --from=build /src/dist/apps ./dist
COPY --from=build /src/apps/web-client/public ./dist/web-client
COPY deploy/docker/run.cjs ./run.cjs
# The `node` user (uid/gid 1000) ships with the official image.
USER 1000:1000
# Public: 8080 (ws-gateway WebSocket), 8081 (rest-gateway). Internal: 9080 (ws-gateway /send and
# probes), 9101-9106 (message-router, group-message-router, session-ms, group-ms, persistence-ms,
# push-ms). Which one an app uses is its PORT (and ws-gateway's INTERNAL_PORT).
EXPOSE 8080 8081 9080 9101 9102 9103 9104 9105 9106
ENTRYPOINT ["node", "/app/run.cjs"]
CMD []
