#!/usr/bin/env bash
# Packs SvgDiffusion (library) and SvgDiffusion.Cli (the svgd .NET tool) into artifacts/, installs the tool into a
# temporary tool path (never the user's global tools) and runs it: `svgd sample` on the bundled model (PNG checked)
# and `svgd doctor` (the native kernels' line). Then builds a throwaway console project against the library package
# and runs it, to show the kernels load from runtimes/linux-x64/native/ there too. Prints sizes and times and, last,
# one summary line "pack: ...". Exit status: non-zero on any failure. See docs/packages.md.
#   build/pack-and-smoke.sh [--keep]     (--keep leaves the temporary folder for inspection)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
keep=0; [ "${1:-}" = "--keep" ] && keep=1
artifacts="$root/artifacts"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/svgd-pack.XXXXXX")
cleanup() { if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi; }
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
step() { echo "== $*"; }

# The version comes from the build (Directory.Build.props), not from this script.
version=$(dotnet msbuild src/SvgDiffusion/SvgDiffusion.csproj -getProperty:Version -p:Configuration=Release)
step "version $version"

t0=$(now)
rm -f "$artifacts"/SvgDiffusion.*"$version".nupkg "$artifacts"/SvgDiffusion.*"$version".snupkg
dotnet pack src/SvgDiffusion/SvgDiffusion.csproj -c Release -o "$artifacts" -nologo -v:q
dotnet pack src/SvgDiffusion.Cli/SvgDiffusion.Cli.csproj -c Release -o "$artifacts" -nologo -v:q
t_pack=$(secs "$t0" "$(now)")
lib="$artifacts/SvgDiffusion.$version.nupkg"; tool="$artifacts/SvgDiffusion.Cli.$version.nupkg"
for f in "$lib" "$artifacts/SvgDiffusion.$version.snupkg" "$tool" "$artifacts/SvgDiffusion.Cli.$version.snupkg"; do
  [ -f "$f" ] || { echo "missing $f" >&2; exit 1; }
  echo "$(basename "$f"): $(mib "$f")"
done
# What the issue asks each package to carry.
for entry in lib/net10.0/SvgDiffusion.dll lib/net10.0/SvgDiffusion.xml README.md \
             runtimes/linux-x64/native/libsvgd_kernels.so runtimes/linux-x64/native/libsvgd_glibcxx_shim.so; do
  unzip -l "$lib" "$entry" >/dev/null || { echo "SvgDiffusion.$version.nupkg lacks $entry" >&2; exit 1; }
done
for entry in tools/net10.0/any/svgd.dll tools/net10.0/any/DotnetToolSettings.xml tools/net10.0/any/models/fashion-mnist/dit.safetensors \
             tools/net10.0/any/DnnImageModels/ResNet18Onnx/ResNet18.onnx tools/net10.0/any/runtimes/linux-x64/native/libsvgd_kernels.so \
             tools/net10.0/any/runtimes/linux-x64/native/libLibTorchSharp.so tools/net10.0/any/runtimes/linux-x64/native/libtorch_cpu.so; do
  unzip -l "$tool" "$entry" >/dev/null || { echo "SvgDiffusion.Cli.$version.nupkg lacks $entry" >&2; exit 1; }
done

# A private NuGet world: only artifacts/ (and nuget.org for the library's dependencies), a fresh packages folder
# that falls back on the user's read-only, and no global tool.
export NUGET_PACKAGES="$tmp/packages" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
cat > "$tmp/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="artifacts" value="$artifacts" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
  </packageSources>
  <fallbackPackageFolders>
    <add key="user" value="${HOME}/.nuget/packages" />
  </fallbackPackageFolders>
</configuration>
XML

step "dotnet tool install --tool-path $tmp/tools --add-source $artifacts SvgDiffusion.Cli --version $version"
t0=$(now)
dotnet tool install --tool-path "$tmp/tools" --configfile "$tmp/nuget.config" --add-source "$artifacts" SvgDiffusion.Cli --version "$version"
t_install=$(secs "$t0" "$(now)")
installed=$(du -sh "$tmp/tools" | cut -f1)
echo "installed: $installed in $tmp/tools"

step "svgd sample --n 1 --steps 2 --out s.png (installed tool, bundled model)"
t0=$(now)
"$tmp/tools/svgd" sample --n 1 --steps 2 --out "$tmp/s.png"
t_sample=$(secs "$t0" "$(now)")
[ -s "$tmp/s.png" ] && [ "$(head -c 8 "$tmp/s.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] \
  || { echo "svgd sample did not write a PNG" >&2; exit 1; }
echo "PNG: $(stat -c %s "$tmp/s.png") bytes"

step "svgd doctor (installed tool)"
t0=$(now)
"$tmp/tools/svgd" doctor > "$tmp/doctor.txt" 2>&1 || { cat "$tmp/doctor.txt"; echo "svgd doctor failed" >&2; exit 1; }
t_doctor=$(secs "$t0" "$(now)")
grep -E "libstdc\+\+|native kernels" "$tmp/doctor.txt" | sed 's/^ *//'
kernels_tool=$(grep -E "native kernels" "$tmp/doctor.txt" | head -n 1)
case "$kernels_tool" in
  *"not loaded"*) echo "warning: the tool's native kernels did not load" >&2 ;;
  *runtimes/linux-x64/native/libsvgd_kernels.so*) ;;
  *) echo "doctor does not say where the kernels came from" >&2; exit 1 ;;
esac

step "a console project referencing SvgDiffusion $version"
mkdir -p "$tmp/consumer"
cat > "$tmp/consumer/consumer.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><OutputType>Exe</OutputType><TargetFramework>net10.0</TargetFramework><ImplicitUsings>enable</ImplicitUsings></PropertyGroup>
  <ItemGroup><PackageReference Include="SvgDiffusion" Version="$version" /></ItemGroup>
</Project>
XML
cat > "$tmp/consumer/Program.cs" <<'CS'
using SvgDiffusion.Runtime;
Console.WriteLine($"libstdc++: {TorchRuntime.Compat}");
Console.WriteLine($"native kernels: {Diagnosis.NativeKernelsStatus()}");
Console.WriteLine($"libtorch: ones(3).sum() = {TorchSharp.torch.ones(3).sum().item<float>()}");
CS
# It lives under $tmp, out of reach of this repository's Directory.Build.props.
t0=$(now)
(cd "$tmp/consumer" && dotnet build -c Release --configfile "$tmp/nuget.config" -nologo -v:q -o out && dotnet out/consumer.dll) | tee "$tmp/consumer.txt"
t_consumer=$(secs "$t0" "$(now)")
grep -q "native kernels: .*runtimes/linux-x64/native/libsvgd_kernels.so" "$tmp/consumer.txt" \
  || grep -q "native kernels: not loaded" "$tmp/consumer.txt" || { echo "consumer did not report the kernels" >&2; exit 1; }
grep -q "ones(3).sum() = 3" "$tmp/consumer.txt" || { echo "consumer could not run libtorch" >&2; exit 1; }

echo "pack: ok, SvgDiffusion $(mib "$lib"), SvgDiffusion.Cli $(mib "$tool") (installed $installed);" \
     "pack ${t_pack}s, install ${t_install}s, sample ${t_sample}s, doctor ${t_doctor}s, library consumer ${t_consumer}s"
