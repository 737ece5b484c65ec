//! The one table of MCP method names the filter gives a meaning to, and the pseudo-operations it
//! names itself (results, transport requests). Every stage asks this table; no other file spells a
//! method. A method not in the table is still an action (its `operation` is the name as sent);
//! it only has no special fields, lists or results.

/// A method (or pseudo-operation) the filter knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// `initialize`: the legacy handshake that opens a session.
    Initialize,
    /// `tools/call`: `params.name` is the tool, `params.arguments` its arguments.
    ToolsCall,
    /// `tools/list`: its result is filtered.
    ToolsList,
    /// `prompts/get`: `params.name` is the prompt, `params.arguments` its arguments.
    PromptsGet,
    /// `prompts/list`: its result is filtered.
    PromptsList,
    /// `resources/read`: `params.uri` is the resource.
    ResourcesRead,
    /// `resources/subscribe`: `params.uri` is the resource.
    ResourcesSubscribe,
    /// `resources/unsubscribe`: `params.uri` is the resource.
    ResourcesUnsubscribe,
    /// `resources/list`: its result is filtered.
    ResourcesList,
    /// `resources/templates/list`: its entries are scanned for instructions.
    ResourcesTemplatesList,
    /// `completion/complete`: `params.ref` names a prompt or resource, `params.argument` is the
    /// argument.
    CompletionComplete,
    /// `tools/result` (pseudo): a tool result coming back, judged as an action.
    ToolsResult,
    /// `tools/list_entry` (pseudo): a listed tool whose definition carries an instruction aimed at
    /// the agent, judged as an action (`results/poison.rs`).
    ToolsListEntry,
    /// `prompts/list_entry` (pseudo): the same for a listed prompt.
    PromptsListEntry,
    /// `resources/list_entry` (pseudo): the same for a listed resource.
    ResourcesListEntry,
    /// `stream/open` (pseudo): the GET that opens a server-to-client stream.
    StreamOpen,
    /// `session/delete` (pseudo): the DELETE that ends a session.
    SessionDelete,
    /// `http/options` (pseudo): an OPTIONS request (CORS preflight) to the MCP endpoint.
    HttpOptions,
    /// `tasks/get` (tasks extension): `params.taskId` names a task; its answer may carry the
    /// task's result.
    TasksGet,
    /// `tasks/update` (tasks extension): `params.taskId`, with `inputResponses`.
    TasksUpdate,
    /// `tasks/cancel` (tasks extension): `params.taskId`.
    TasksCancel,
}

/// Every method with its name, in one place.
const TABLE: [(Method, &str); 21] = [
    (Method::Initialize, "initialize"),
    (Method::ToolsCall, "tools/call"),
    (Method::ToolsList, "tools/list"),
    (Method::PromptsGet, "prompts/get"),
    (Method::PromptsList, "prompts/list"),
    (Method::ResourcesRead, "resources/read"),
    (Method::ResourcesSubscribe, "resources/subscribe"),
    (Method::ResourcesUnsubscribe, "resources/unsubscribe"),
    (Method::ResourcesList, "resources/list"),
    (Method::ResourcesTemplatesList, "resources/templates/list"),
    (Method::CompletionComplete, "completion/complete"),
    (Method::ToolsResult, "tools/result"),
    (Method::ToolsListEntry, "tools/list_entry"),
    (Method::PromptsListEntry, "prompts/list_entry"),
    (Method::ResourcesListEntry, "resources/list_entry"),
    (Method::StreamOpen, "stream/open"),
    (Method::SessionDelete, "session/delete"),
    (Method::HttpOptions, "http/options"),
    (Method::TasksGet, "tasks/get"),
    (Method::TasksUpdate, "tasks/update"),
    (Method::TasksCancel, "tasks/cancel"),
];

/// The prefix of every MCP notification's method.
pub(crate) const NOTIFICATION_PREFIX: &str = "notifications/";

impl Method {
    /// The method's name on the wire (or the pseudo-operation's name in actions and receipts).
    pub(crate) fn name(self) -> &'static str {
        TABLE
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("", |(_, n)| n)
    }

    /// The method named `name` (exactly, as JSON-RPC compares).
    pub(crate) fn from_name(name: &str) -> Option<Method> {
        TABLE.iter().find(|(_, n)| *n == name).map(|(m, _)| *m)
    }

    /// Whether `operation` is this method.
    pub(crate) fn is(self, operation: &str) -> bool {
        self.name() == operation
    }

    /// A method of the tasks extension (`params.taskId` names the task).
    pub(crate) fn is_task(self) -> bool {
        matches!(
            self,
            Method::TasksGet | Method::TasksUpdate | Method::TasksCancel
        )
    }

    /// A method that acts on something (the split the VM uses for intent scoping).
    pub(crate) fn acts(self) -> bool {
        matches!(
            self,
            Method::ToolsCall | Method::ResourcesRead | Method::PromptsGet
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_one_distinct_name() {
        for (m, n) in TABLE {
            assert_eq!(m.name(), n);
            assert_eq!(Method::from_name(n), Some(m));
            assert_eq!(TABLE.iter().filter(|(_, x)| *x == n).count(), 1, "{n}");
        }
        assert_eq!(
            Method::from_name("Tools/Call"),
            None,
            "JSON-RPC names are exact"
        );
    }
}
