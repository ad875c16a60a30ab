from alpine as builder
run echo lower
copy . /src
Env Mixed=case
workdir /src
cmd ["sh"]
