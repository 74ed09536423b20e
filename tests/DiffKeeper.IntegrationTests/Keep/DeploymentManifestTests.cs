using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;
using YamlDotNet.RepresentationModel;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// The deployment files, read as Kubernetes would read them and run as processes: the init container's and the
/// app container's command and args are executed against directories standing in for the emptyDir and the PVC,
/// the pod is SIGKILLed, the emptyDir is replaced by an empty one, and the restore must bring the data back.
/// helm is not installable here: the chart is checked by parsing (every .Values reference resolves in values.yaml).
/// </summary>
[Collection(KeepCollection.Name)]
public sealed partial class DeploymentManifestTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DiffKeeper.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("cannot find the repository root");
    }

    private static List<YamlMappingNode> Documents(string path)
    {
        var stream = new YamlStream();
        using var reader = new StreamReader(path);
        stream.Load(reader);
        return stream.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
    }

    private static YamlNode At(YamlNode node, params string[] keys)
    {
        foreach (var key in keys)
        {
            node = ((YamlMappingNode)node).Children[new YamlScalarNode(key)];
        }

        return node;
    }

    private static string Scalar(YamlNode node, params string[] keys) => ((YamlScalarNode)At(node, keys)).Value!;

    private static List<string> Strings(YamlNode node) => ((YamlSequenceNode)node).Children.Select(n => ((YamlScalarNode)n).Value!).ToList();

    private sealed record Container(string Name, List<string> Command, Dictionary<string, string> Mounts);

    private static Container Read(YamlNode c) => new(
        Scalar(c, "name"),
        [.. Strings(At(c, "command")), .. Strings(At(c, "args"))],
        ((YamlSequenceNode)At(c, "volumeMounts")).Children.ToDictionary(m => Scalar(m, "name"), m => Scalar(m, "mountPath")));

    [Fact]
    public void The_deployment_restores_in_its_init_container_and_its_app_survives_a_kill_and_a_new_emptyDir()
    {
        var docs = Documents(Path.Combine(RepoRoot(), "deploy", "k8s", "deployment.yaml"));
        var deployment = docs.Single(d => Scalar(d, "kind") == "Deployment");
        var pvc = docs.Single(d => Scalar(d, "kind") == "PersistentVolumeClaim");
        var pod = At(deployment, "spec", "template");
        var init = Read(((YamlSequenceNode)At(pod, "spec", "initContainers")).Children.Single());
        var app = Read(((YamlSequenceNode)At(pod, "spec", "containers")).Children.Single());
        var volumes = ((YamlSequenceNode)At(pod, "spec", "volumes")).Children.ToDictionary(v => Scalar(v, "name"), v => (YamlMappingNode)v);
        Assert.Equal("restore", init.Name);
        Assert.Equal("restore", init.Command[1]);
        Assert.Equal("run", app.Command[1]);
        Assert.True(volumes["state"].Children.ContainsKey(new YamlScalarNode("emptyDir")));
        Assert.Equal(Scalar(pvc, "metadata", "name"), Scalar(volumes["store"], "persistentVolumeClaim", "claimName"));
        Assert.Equal("true", Scalar(pod, "metadata", "annotations", "prometheus.io/scrape"));
        Assert.Contains(":" + Scalar(pod, "metadata", "annotations", "prometheus.io/port"), app.Command);
        var rbac = Documents(Path.Combine(RepoRoot(), "deploy", "k8s", "rbac.yaml"));
        Assert.Contains(rbac, d => Scalar(d, "kind") == "ServiceAccount" && Scalar(d, "metadata", "name") == Scalar(pod, "spec", "serviceAccountName"));

        // The volumes become directories; the executable, the ports and nothing else are substituted.
        var state = _dir.Sub("emptyDir");
        var store = _dir.Sub("pvc");
        Directory.CreateDirectory(state);
        Directory.CreateDirectory(store);
        var port = RedisSurvivesKillTests.FreePort();
        var paths = new Dictionary<string, string> { [init.Mounts["state"]] = state, [init.Mounts["store"]] = store };
        string[] Substitute(Container c) => c.Command.Select((arg, i) =>
            i == 0 ? Cli.Executable
            : paths.TryGetValue(arg, out var p) ? p
            : arg == "6379" ? port.ToString()
            : arg.StartsWith(':') ? "127.0.0.1:0"
            : arg).ToArray();

        var initArgs = Substitute(init);
        var appArgs = Substitute(app);
        Assert.Contains("nothing to restore", Cli.Ok(_dir.Path, initArgs[1..]).Stderr);
        using (var pod1 = KeepProcess.StartDiffKeeper(_dir.Path, appArgs[1..]))
        {
            using var client = RespClient.Connect(port, TimeSpan.FromSeconds(60), () => pod1.Stderr);
            for (var i = 0; i < 200; i++)
            {
                Assert.Equal("OK", client.Command("SET", $"key{i}", $"value{i}"));
            }

            Thread.Sleep(500); // five flush intervals: every key is in the store
            pod1.KillGroup();
            pod1.WaitForExit(TimeSpan.FromSeconds(30));
            pod1.WaitGroupGone();
        }

        Directory.Delete(state, recursive: true); // the pod is rescheduled: a new, empty emptyDir
        Directory.CreateDirectory(state);
        var restored = Cli.Ok(_dir.Path, initArgs[1..]);
        Assert.Contains("versions verified", restored.Stderr);
        using (var pod2 = KeepProcess.StartDiffKeeper(_dir.Path, appArgs[1..]))
        {
            using var client = RespClient.Connect(port, TimeSpan.FromSeconds(60), () => pod2.Stderr);
            Assert.Equal(200L, client.Command("DBSIZE"));
            Assert.Equal("value199", client.Command("GET", "key199"));
            Native.Interop.Libc.Kill(pod2.Process.Id, 15);
            Assert.Equal(0, pod2.WaitForExit(TimeSpan.FromSeconds(60)));
        }
    }

    [GeneratedRegex(@"\.Values((?:\.[A-Za-z0-9_]+)+)")]
    private static partial Regex ValuesReference();

    [Fact]
    public void Every_value_the_helm_templates_use_is_in_values_yaml_and_the_image_is_multi_stage_and_non_root()
    {
        var chart = Path.Combine(RepoRoot(), "deploy", "helm", "diffkeeper");
        var values = Documents(Path.Combine(chart, "values.yaml")).Single();
        Assert.Equal("v2", Scalar(Documents(Path.Combine(chart, "Chart.yaml")).Single(), "apiVersion"));
        var templates = Directory.GetFiles(Path.Combine(chart, "templates"), "*.yaml");
        Assert.Contains(templates, t => t.EndsWith("deployment.yaml", StringComparison.Ordinal));
        foreach (var template in templates)
        {
            foreach (Match m in ValuesReference().Matches(File.ReadAllText(template)))
            {
                var keys = m.Groups[1].Value.Split('.', StringSplitOptions.RemoveEmptyEntries);
                var ok = true;
                YamlNode node = values;
                foreach (var key in keys)
                {
                    if (node is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out var next))
                    {
                        ok = false;
                        break;
                    }

                    node = next;
                }

                Assert.True(ok, $"{Path.GetFileName(template)} uses .Values{m.Groups[1].Value}, which values.yaml lacks");
            }
        }

        foreach (var key in new[] { "image", "stateDir", "store", "resources", "metrics" })
        {
            Assert.True(values.Children.ContainsKey(new YamlScalarNode(key)), $"values.yaml has no {key}");
        }

        var dockerfile = File.ReadAllLines(Path.Combine(RepoRoot(), "deploy", "Dockerfile"));
        Assert.True(dockerfile.Count(l => l.StartsWith("FROM ", StringComparison.Ordinal)) >= 2, "the Dockerfile is not multi-stage");
        Assert.Contains(dockerfile, l => l.StartsWith("USER ", StringComparison.Ordinal) && !l.Contains("root", StringComparison.Ordinal) && !l.StartsWith("USER 0", StringComparison.Ordinal));
    }
}
