FROM node:20 AS onbuild-base
WORKDIR /app
ONBUILD COPY package.json ./
ONBUILD RUN npm install
ONBUILD COPY . .

FROM onbuild-base AS app
ENV PORT=8080
CMD ["npm", "start"]

FROM app
RUN echo grandchild sees no triggers
