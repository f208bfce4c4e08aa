# httpsqs in a container: docker build -t httpsqs . && docker run -p 1218:1218 -v httpsqs-data:/data httpsqs
# Passwords: docker run -e HTTPSQS_AUTH=... (or --auth-file with a mounted secret).

FROM node:22-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
RUN npm ci --no-audit --no-fund
COPY src ./src
RUN npx tsc -p .

FROM node:22-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json LICENSE README.md ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
RUN groupadd --system httpsqs && useradd --system --gid httpsqs --home-dir /data --shell /usr/sbin/nologin httpsqs \
  && mkdir -m 0700 /data && chown httpsqs:httpsqs /data
USER httpsqs
VOLUME /data
EXPOSE 1218
# The slim image has no curl: node asks /healthz itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:1218/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Listening on every interface of the container is what makes -p work; set a password (-a or
# HTTPSQS_AUTH) before publishing the port beyond this machine.
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["-l", "0.0.0.0", "-p", "1218", "-x", "/data", "-i", "/data/httpsqs.pid"]
