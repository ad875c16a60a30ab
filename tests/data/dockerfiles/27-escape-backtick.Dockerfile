# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022
WORKDIR C:\app
COPY . C:\app\
RUN powershell -Command `
    Write-Host hello; `
    Write-Host world
ENV LITERAL=`$NOT_EXPANDED BACKSLASH=C:\tmp
