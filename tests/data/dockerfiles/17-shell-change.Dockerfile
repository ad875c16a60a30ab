FROM mcr.microsoft.com/powershell:lts-debian-11
SHELL ["pwsh", "-NoLogo", "-Command"]
RUN Write-Host hello
CMD Get-Date
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN curl -fsSL https://example.com | wc -c
ENTRYPOINT exec /usr/bin/app
