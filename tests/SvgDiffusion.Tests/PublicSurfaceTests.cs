using System.Reflection;
using System.Text;
using Xunit;

namespace SvgDiffusion.Tests;

/// <summary>
/// The library's public surface and the CLI reference, each compared with a committed file, so a breaking change
/// or an undocumented option is seen in review. After an intended change, regenerate both with
/// <c>SVGD_UPDATE_SURFACE=1 dotnet test --filter PublicSurfaceTests</c> and commit the files.
/// </summary>
public class PublicSurfaceTests
{
    static bool Update => Environment.GetEnvironmentVariable("SVGD_UPDATE_SURFACE") == "1";

    static void Compare(string relative, string actual)
    {
        string path = Path.Combine(Reference.RepoRoot, relative);
        if (Update) { Directory.CreateDirectory(Path.GetDirectoryName(path)!); File.WriteAllText(path, actual); }
        Assert.True(File.Exists(path), $"{relative} is missing: run SVGD_UPDATE_SURFACE=1 dotnet test --filter PublicSurfaceTests");
        string expected = File.ReadAllText(path).Replace("\r\n", "\n");
        if (expected == actual) return;
        var e = expected.Split('\n'); var a = actual.Split('\n');
        var gone = e.Except(a).Take(20).Select(l => "- " + l);
        var added = a.Except(e).Take(20).Select(l => "+ " + l);
        Assert.Fail($"{relative} differs from the code (regenerate with SVGD_UPDATE_SURFACE=1 if intended):\n{string.Join("\n", gone.Concat(added))}");
    }

    /// <summary>Every public type of the library and its public members, one line each, sorted.</summary>
    static string Surface(Assembly assembly)
    {
        var lines = new List<string>();
        const BindingFlags Declared = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (var t in assembly.GetExportedTypes().OrderBy(t => t.FullName, StringComparer.Ordinal))
        {
            string kind = t.IsEnum ? "enum" : t.IsInterface ? "interface" : t.IsValueType ? "struct" : t.IsAbstract && t.IsSealed ? "static class" : "class";
            lines.Add($"{kind} {Name(t)}{(t.BaseType is Type b && b != typeof(object) && b != typeof(ValueType) && b != typeof(Enum) ? " : " + Name(b) : "")}");
            var members = t.GetMembers(Declared)
                .Where(m => m is not MethodInfo { IsSpecialName: true } && m is not Type)
                .Select(m => "  " + Member(m))
                .Distinct()
                .OrderBy(s => s, StringComparer.Ordinal);
            lines.AddRange(members);
        }
        return string.Join("\n", lines) + "\n";
    }

    static string Member(MemberInfo m) => m switch
    {
        ConstructorInfo c => $"ctor({Parameters(c)})",
        MethodInfo mi => $"{(mi.IsStatic ? "static " : "")}{Name(mi.ReturnType)} {mi.Name}{(mi.IsGenericMethod ? $"<{string.Join(", ", mi.GetGenericArguments().Select(Name))}>" : "")}({Parameters(mi)})",
        PropertyInfo p => $"{(p.GetMethod?.IsStatic == true ? "static " : "")}{Name(p.PropertyType)} {p.Name} {{{(p.GetMethod?.IsPublic == true ? " get;" : "")}{(p.SetMethod?.IsPublic == true ? " set;" : "")} }}",
        FieldInfo f => $"{(f.IsLiteral ? "const " : f.IsStatic ? "static " : "")}{(f.IsInitOnly ? "readonly " : "")}{Name(f.FieldType)} {f.Name}",
        EventInfo e => $"event {Name(e.EventHandlerType!)} {e.Name}",
        _ => m.ToString() ?? m.Name,
    };

    static string Parameters(MethodBase m) => string.Join(", ", m.GetParameters().Select(p => $"{Name(p.ParameterType)} {p.Name}{(p.HasDefaultValue ? " = …" : "")}"));

    static string Name(Type t)
    {
        if (t.IsGenericParameter) return t.Name;
        if (t.IsArray) return Name(t.GetElementType()!) + "[]";
        if (t.IsByRef) return "ref " + Name(t.GetElementType()!);
        string n = (t.IsNested ? Name(t.DeclaringType!) + "." + t.Name : t.FullName ?? t.Name);
        if (!t.IsGenericType) return n;
        n = n[..n.IndexOf('`')];
        return $"{n}<{string.Join(", ", t.GetGenericArguments().Select(Name))}>";
    }

    [Fact]
    public void TheLibrarysPublicSurfaceIsTheCommittedOne() =>
        Compare("api/SvgDiffusion.txt", Surface(typeof(SvgdException).Assembly));

    /// <summary>docs/cli.md: every command's --help, as the CLI prints it.</summary>
    [Fact]
    public void TheCliReferenceIsGeneratedFromHelp()
    {
        var cli = new SvgDiffusion.Cli.CliContext(new Spectre.Console.Testing.TestConsole(), new StringWriter());
        var root = SvgDiffusion.Cli.SvgdCli.Build(cli);
        var md = new StringBuilder();
        md.Append("# svgd command reference\n\nGenerated from `svgd <command> --help` by `PublicSurfaceTests` (regenerate: `SVGD_UPDATE_SURFACE=1 dotnet test --filter PublicSurfaceTests`).\n");
        foreach (var args in new[] { Array.Empty<string>() }.Concat(root.Subcommands.SelectMany(c => c.Subcommands.Count > 0
                     ? new[] { new[] { c.Name } }.Concat(c.Subcommands.Select(s => new[] { c.Name, s.Name })) : new[] { new[] { c.Name } })))
        {
            var output = new StringWriter();
            root.Parse(args.Append("--help").ToArray()).Invoke(new System.CommandLine.InvocationConfiguration { Output = output });
            // Under the test host the root command takes the host's name; under ./svgd it is svgd.
            string text = output.ToString().Replace("\r\n", "\n").Replace(System.CommandLine.RootCommand.ExecutableName + " ", "svgd ").TrimEnd();
            md.Append($"\n## svgd {string.Join(" ", args)}\n\n```\n{text}\n```\n");
        }
        Compare("docs/cli.md", md.ToString());
    }
}
