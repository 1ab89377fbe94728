"""SSIS's catalog procedures in T-SQL for SQL Server, frozen at revision 0005: the same
procedures as :mod:`procedures_0005` (PostgreSQL), with SSIS's ``@parameters`` and
``@execution_id OUTPUT``. A refusal is ``THROW 50000`` after a rollback, so nothing is
written; ``XACT_ABORT`` rolls back on any other error. No SQL Server runs in this
project's tests: they check the rendered text, not its execution.
"""

from __future__ import annotations


def _fail(message: str) -> str:
    return f"BEGIN ROLLBACK; THROW 50000, {message}, 1; END"


HEAD = """    SET NOCOUNT ON;
    SET XACT_ABORT ON;"""

CREATE_EXECUTION = f"""
CREATE OR ALTER PROCEDURE catalog.create_execution
    @folder_name NVARCHAR(128),
    @project_name NVARCHAR(128),
    @package_name NVARCHAR(260),
    @reference_id BIGINT = NULL,
    @use32bitruntime BIT = 0,
    @runinscaleout BIT = NULL,
    @useanyworker BIT = 1,
    @execution_id BIGINT OUTPUT
AS
BEGIN
{HEAD}
    DECLARE @folder BIGINT, @project BIGINT, @lsn BIGINT, @env BIGINT, @ref_project BIGINT;
    DECLARE @job UNIQUEIDENTIFIER = NEWID(), @msg NVARCHAR(2048);
    DECLARE @env_folder NVARCHAR(128), @env_name NVARCHAR(128);
    BEGIN TRANSACTION;
    IF @runinscaleout IS NULL
        SET @runinscaleout = CASE WHEN EXISTS (SELECT 1 FROM internal.catalog_properties
            WHERE property_name = N'DEFAULT_EXECUTION_MODE' AND property_value = N'0')
            THEN 0 ELSE 1 END;
    IF @runinscaleout = 0
    {_fail("N'scaleout runs executions in Scale Out only'")};
    SELECT @folder = folder_id FROM internal.folders WHERE name = @folder_name;
    IF @folder IS NULL
    BEGIN
        SET @msg = CONCAT(N'folder ''', @folder_name, N''' does not exist');
        {_fail("@msg")};
    END;
    SELECT @project = project_id, @lsn = object_version_lsn FROM internal.projects
    WHERE folder_id = @folder AND name = @project_name;
    IF @lsn IS NULL
    BEGIN
        SET @msg = CONCAT(N'project ''', @project_name, N''' does not exist in folder ''',
            @folder_name, N'''');
        {_fail("@msg")};
    END;
    IF NOT EXISTS (SELECT 1 FROM internal.packages
                   WHERE project_version_lsn = @lsn AND name = @package_name)
    BEGIN
        SET @msg = CONCAT(N'package ''', @package_name, N''' does not exist in project ''',
            @project_name, N'''');
        {_fail("@msg")};
    END;
    IF @reference_id IS NOT NULL
    BEGIN
        SELECT @ref_project = project_id,
               @env_folder = COALESCE(environment_folder_name, @folder_name),
               @env_name = environment_name
        FROM internal.environment_references WHERE reference_id = @reference_id;
        IF @ref_project IS NULL
        BEGIN
            SET @msg = CONCAT(N'environment reference ', @reference_id, N' does not exist');
            {_fail("@msg")};
        END;
        IF @ref_project <> @project
        BEGIN
            SET @msg = CONCAT(N'environment reference ', @reference_id,
                N' belongs to another project, not to ', @project_name);
            {_fail("@msg")};
        END;
        SELECT @env = e.environment_id FROM internal.environments e
        JOIN internal.folders f ON f.folder_id = e.folder_id
        WHERE f.name = @env_folder AND e.environment_name = @env_name;
        IF @env IS NULL
        BEGIN
            SET @msg = CONCAT(N'environment reference ', @reference_id,
                N' names a missing environment: ', @env_name);
            {_fail("@msg")};
        END;
    END;
    -- The parameters this execution declares, and the variable each referenced one takes.
    DECLARE @params TABLE (object_type SMALLINT, parameter_name NVARCHAR(128),
        data_type NVARCHAR(16), sensitive BIT, value_type CHAR(1), value_set BIT,
        server_value NVARCHAR(max), default_value NVARCHAR(max), variable NVARCHAR(128),
        v_found BIT, v_type NVARCHAR(16), v_sensitive BIT, v_value NVARCHAR(max));
    INSERT INTO @params
    SELECT p.object_type, p.parameter_name, p.data_type, p.sensitive, p.value_type,
           p.value_set, p.server_value, p.default_value, p.referenced_variable_name,
           CASE WHEN v.variable_id IS NULL THEN 0 ELSE 1 END, v.type, v.sensitive, v.value
    FROM internal.object_parameters p
    LEFT JOIN internal.environment_variables v
        ON v.environment_id = @env AND v.name = p.referenced_variable_name
    WHERE p.project_version_lsn = @lsn
      AND ((p.object_type = 20 AND p.object_name = @project_name)
        OR (p.object_type = 30 AND p.object_name = @package_name));
    IF @env IS NOT NULL
    BEGIN
        SELECT TOP 1 @msg = CONCAT(N'parameter ', parameter_name, N' references variable ''',
            variable, N''', which environment ''', @env_name, N''' does not have')
        FROM @params WHERE value_set = 1 AND value_type = 'R' AND v_found = 0;
        IF @msg IS NOT NULL {_fail("@msg")};
        SELECT TOP 1 @msg = CONCAT(N'sensitive variable ''', variable,
            N''' cannot give a value to parameter ', parameter_name, N', which is not sensitive')
        FROM @params WHERE value_set = 1 AND value_type = 'R' AND v_sensitive = 1 AND sensitive = 0;
        IF @msg IS NOT NULL {_fail("@msg")};
        SELECT TOP 1 @msg = CONCAT(N'sensitive parameter ', parameter_name,
            N' takes plain variable ''', variable, N''': its value must be encrypted with the ',
            N'catalog key, which the database does not hold')
        FROM @params WHERE value_set = 1 AND value_type = 'R' AND v_sensitive = 0 AND sensitive = 1;
        IF @msg IS NOT NULL {_fail("@msg")};
        SELECT TOP 1 @msg = CONCAT(N'variable ''', variable, N''' is a ', v_type,
            N' and parameter ', parameter_name, N' a ', data_type)
        FROM @params WHERE value_set = 1 AND value_type = 'R' AND v_type <> data_type;
        IF @msg IS NOT NULL {_fail("@msg")};
    END;
    INSERT INTO internal.operations (operation_type, created_time, object_type, object_id,
        object_name, status, caller_name, executed_count, machine_name)
    VALUES (200, SYSDATETIMEOFFSET(), 20, @project, @project_name, 1, SUSER_SNAME(), 0, N'');
    SET @execution_id = SCOPE_IDENTITY();
    INSERT INTO internal.executions (execution_id, folder_name, project_name, package_name,
        reference_id, project_lsn, use32bitruntime, runinscaleout, useanyworker, job_id)
    VALUES (@execution_id, @folder_name, @project_name, @package_name, @reference_id, @lsn,
        @use32bitruntime, 1, @useanyworker, @job);
    INSERT INTO internal.jobs (job_id, execution_id, job_type, use_any_worker, is_cancelled,
        creator, created_time, last_updated_time)
    VALUES (@job, @execution_id, 1, @useanyworker, 0, SUSER_SNAME(), SYSDATETIMEOFFSET(),
        SYSDATETIMEOFFSET());
    INSERT INTO internal.execution_parameter_values (execution_id, object_type,
        parameter_name, parameter_value, sensitive)
    SELECT @execution_id, object_type, parameter_name, resolved, sensitive
    FROM (SELECT object_type, parameter_name, sensitive, value_set, value_type,
                 CASE WHEN value_set = 1 AND value_type = 'R' THEN v_value
                      WHEN value_set = 1 AND server_value IS NOT NULL THEN server_value
                      ELSE default_value END AS resolved
          FROM @params) r
    WHERE resolved IS NOT NULL AND NOT (value_set = 1 AND value_type = 'R' AND @env IS NULL);
    COMMIT;
END
"""

CREATED = f"""    DECLARE @status INT, @lsn BIGINT, @project_name NVARCHAR(128),
            @package_name NVARCHAR(260), @useanyworker BIT, @job UNIQUEIDENTIFIER,
            @msg NVARCHAR(2048);
    BEGIN TRANSACTION;
    SELECT @status = o.status, @lsn = e.project_lsn, @project_name = e.project_name,
           @package_name = e.package_name, @useanyworker = e.useanyworker, @job = e.job_id
    FROM internal.executions e
    JOIN internal.operations o WITH (UPDLOCK, ROWLOCK) ON o.operation_id = e.execution_id
    WHERE e.execution_id = @execution_id;
    IF @status IS NULL
    BEGIN
        SET @msg = CONCAT(N'execution ', @execution_id, N' does not exist');
        {_fail("@msg")};
    END;
    IF @status <> 1
    BEGIN
        SET @msg = CONCAT(N'cannot change execution ', @execution_id, N': it already started');
        {_fail("@msg")};
    END;"""

SET_EXECUTION_PARAMETER_VALUE = f"""
CREATE OR ALTER PROCEDURE catalog.set_execution_parameter_value
    @execution_id BIGINT,
    @object_type SMALLINT,
    @parameter_name NVARCHAR(128),
    @parameter_value SQL_VARIANT
AS
BEGIN
{HEAD}
{CREATED}
    DECLARE @type NVARCHAR(16), @sensitive BIT = 0, @text NVARCHAR(max), @json NVARCHAR(max);
    SET @text = CONVERT(NVARCHAR(max), @parameter_value);
    IF @object_type = 50
        SET @type = CASE @parameter_name WHEN N'LOGGING_LEVEL' THEN N'int'
            WHEN N'SYNCHRONIZED' THEN N'bool' WHEN N'DUMP_ON_ERROR' THEN N'bool'
            WHEN N'DUMP_ON_EVENT' THEN N'bool' WHEN N'CUSTOMIZED_LOGGING_LEVEL' THEN N'string'
            WHEN N'DUMP_EVENT_CODE' THEN N'string' WHEN N'CALLER_INFO' THEN N'string' END;
    ELSE IF @object_type IN (20, 30)
        SELECT @type = data_type, @sensitive = sensitive FROM internal.object_parameters
        WHERE project_version_lsn = @lsn AND object_type = @object_type
          AND object_name = CASE WHEN @object_type = 20 THEN @project_name ELSE @package_name END
          AND parameter_name = @parameter_name;
    ELSE
    BEGIN
        SET @msg = CONCAT(N'object_type must be 20 (project), 30 (package) or 50 (system), not ',
            @object_type);
        {_fail("@msg")};
    END;
    IF @type IS NULL
    BEGIN
        SET @msg = CONCAT(N'parameter ''', @parameter_name, N''' (object_type ', @object_type,
            N') is not declared');
        {_fail("@msg")};
    END;
    IF @sensitive = 1
    BEGIN
        SET @msg = CONCAT(N'parameter ', @parameter_name, N' is sensitive: its value must be ',
            N'encrypted with the catalog key, which the database does not hold');
        {_fail("@msg")};
    END;
    SET @json = CASE
        WHEN @text IS NULL THEN N'null'
        WHEN @type = N'string' THEN CONCAT(N'"', STRING_ESCAPE(@text, 'json'), N'"')
        WHEN @type = N'int' AND TRY_CONVERT(BIGINT, @text) IS NOT NULL
            THEN CONVERT(NVARCHAR(40), TRY_CONVERT(BIGINT, @text))
        WHEN @type = N'float' AND TRY_CONVERT(FLOAT, @text) IS NOT NULL
            THEN CONVERT(NVARCHAR(40), TRY_CONVERT(FLOAT, @text), 3)
        WHEN @type = N'bool' AND LOWER(LTRIM(RTRIM(@text))) IN (N'1', N'true', N'yes', N'on')
            THEN N'true'
        WHEN @type = N'bool' AND LOWER(LTRIM(RTRIM(@text))) IN (N'0', N'false', N'no', N'off')
            THEN N'false'
        END;
    IF @json IS NULL
    BEGIN
        SET @msg = CONCAT(N'parameter ', @parameter_name, N' takes a ', @type, N', not ''',
            @text, N'''');
        {_fail("@msg")};
    END;
    DELETE FROM internal.execution_parameter_values
    WHERE execution_id = @execution_id AND object_type = @object_type
      AND parameter_name = @parameter_name;
    INSERT INTO internal.execution_parameter_values (execution_id, object_type,
        parameter_name, parameter_value, sensitive)
    VALUES (@execution_id, @object_type, @parameter_name, @json, 0);
    COMMIT;
END
"""

ADD_EXECUTION_WORKER = f"""
CREATE OR ALTER PROCEDURE catalog.add_execution_worker
    @execution_id BIGINT,
    @workeragent_id NVARCHAR(64)
AS
BEGIN
{HEAD}
{CREATED}
    IF @useanyworker = 1
    BEGIN
        SET @msg = CONCAT(N'execution ', @execution_id,
            N' already allows any worker (useanyworker=1)');
        {_fail("@msg")};
    END;
    IF NOT EXISTS (SELECT 1 FROM internal.worker_agents WHERE worker_agent_id = @workeragent_id)
    BEGIN
        SET @msg = CONCAT(N'worker agent ''', @workeragent_id, N''' does not exist');
        {_fail("@msg")};
    END;
    IF NOT EXISTS (SELECT 1 FROM internal.job_worker_agents
                   WHERE job_id = @job AND worker_agent_id = @workeragent_id)
        INSERT INTO internal.job_worker_agents (job_id, worker_agent_id)
        VALUES (@job, @workeragent_id);
    COMMIT;
END
"""

START_EXECUTION = f"""
CREATE OR ALTER PROCEDURE catalog.start_execution
    @execution_id BIGINT,
    @retry_count INT = 0
AS
BEGIN
{HEAD}
{CREATED}
    IF @retry_count < 0
    BEGIN
        SET @msg = CONCAT(N'retry_count must be 0 or more, not ', @retry_count);
        {_fail("@msg")};
    END;
    SELECT @msg = STRING_AGG(CONCAT(p.parameter_name, N' (variable ',
        p.referenced_variable_name, N')'), N', ')
    FROM internal.object_parameters p
    WHERE p.project_version_lsn = @lsn
      AND ((p.object_type = 20 AND p.object_name = @project_name)
        OR (p.object_type = 30 AND p.object_name = @package_name))
      AND p.value_set = 1 AND p.value_type = 'R'
      AND NOT EXISTS (SELECT 1 FROM internal.execution_parameter_values v
                      WHERE v.execution_id = @execution_id AND v.object_type = p.object_type
                        AND v.parameter_name = p.parameter_name);
    IF @msg IS NOT NULL
    BEGIN
        SET @msg = CONCAT(N'execution ', @execution_id, N' takes ', @msg,
            N' from an environment, and has no reference');
        {_fail("@msg")};
    END;
    SELECT @msg = STRING_AGG(p.parameter_name, N', ')
    FROM internal.object_parameters p
    WHERE p.project_version_lsn = @lsn
      AND ((p.object_type = 20 AND p.object_name = @project_name)
        OR (p.object_type = 30 AND p.object_name = @package_name))
      AND p.required = 1
      AND NOT EXISTS (SELECT 1 FROM internal.execution_parameter_values v
                      WHERE v.execution_id = @execution_id AND v.object_type = p.object_type
                        AND v.parameter_name = p.parameter_name);
    IF @msg IS NOT NULL
    BEGIN
        SET @msg = CONCAT(N'execution ', @execution_id, N' lacks required parameters: ', @msg);
        {_fail("@msg")};
    END;
    UPDATE internal.operations SET status = 5, machine_name = N''
    WHERE operation_id = @execution_id AND status = 1;
    INSERT INTO internal.tasks (task_id, job_id, execution_id, task_type, status, attempt,
        executed_count, max_executed_count, ready_for_dispatch_time, is_cancelled,
        cancel_sent, published, created_time, last_updated_time)
    VALUES (NEWID(), @job, @execution_id, 0, 1, 0, 0, @retry_count + 1, SYSDATETIMEOFFSET(),
        0, 0, 0, SYSDATETIMEOFFSET(), SYSDATETIMEOFFSET());
    COMMIT;
END
"""

STOP_OPERATION = f"""
CREATE OR ALTER PROCEDURE catalog.stop_operation
    @operation_id BIGINT
AS
BEGIN
{HEAD}
    DECLARE @task UNIQUEIDENTIFIER, @attempt INT, @task_status INT, @holder NVARCHAR(64);
    DECLARE @type INT, @status INT, @msg NVARCHAR(2048);
    BEGIN TRANSACTION;
    -- The task before the operation, the order the master's status reports lock in.
    SELECT @task = task_id, @attempt = attempt, @task_status = status,
           @holder = worker_agent_id
    FROM internal.tasks WITH (UPDLOCK, ROWLOCK) WHERE execution_id = @operation_id;
    SELECT @type = operation_type, @status = status
    FROM internal.operations WITH (UPDLOCK, ROWLOCK) WHERE operation_id = @operation_id;
    IF @type IS NULL
    BEGIN
        SET @msg = CONCAT(N'operation ', @operation_id, N' does not exist');
        {_fail("@msg")};
    END;
    IF @type <> 200
    BEGIN
        SET @msg = CONCAT(N'operation ', @operation_id,
            N' is not an execution; it cannot be stopped');
        {_fail("@msg")};
    END;
    IF @status IN (1, 3, 4, 6, 7, 9)
    BEGIN
        SET @msg = CONCAT(N'execution ', @operation_id,
            N' is not pending or running; only a pending or running one stops');
        {_fail("@msg")};
    END;
    IF @status = 8
    BEGIN
        COMMIT;
        RETURN;
    END;
    IF @task IS NULL
    BEGIN
        SET @msg = CONCAT(N'execution ', @operation_id, N' has no task to stop');
        {_fail("@msg")};
    END;
    IF @task_status = 3
    BEGIN
        UPDATE internal.tasks SET is_cancelled = 1, cancel_sent = 0,
            last_updated_time = SYSDATETIMEOFFSET()
        WHERE task_id = @task AND attempt = @attempt;
        UPDATE internal.operations SET status = 8, stopped_by_name = SUSER_SNAME()
        WHERE operation_id = @operation_id;
    END
    ELSE
    BEGIN
        UPDATE internal.tasks SET status = 6, is_cancelled = 1,
            cancel_sent = CASE WHEN @holder IS NULL THEN 1 ELSE 0 END, expires_at = NULL,
            last_updated_time = SYSDATETIMEOFFSET()
        WHERE task_id = @task AND attempt = @attempt AND status IN (1, 2);
        IF @task_status = 2
            UPDATE internal.task_attempts SET outcome = N'canceled',
                ended_at = SYSDATETIMEOFFSET()
            WHERE task_id = @task AND attempt = @attempt AND outcome IS NULL;
        UPDATE internal.operations SET status = 3, end_time = SYSDATETIMEOFFSET(),
            stopped_by_name = SUSER_SNAME()
        WHERE operation_id = @operation_id;
    END;
    UPDATE internal.jobs SET is_cancelled = 1 WHERE execution_id = @operation_id;
    INSERT INTO internal.operations (operation_type, created_time, object_type, object_id,
        object_name, status, start_time, end_time, caller_name, executed_count)
    VALUES (202, SYSDATETIMEOFFSET(), 50, @operation_id, CONVERT(NVARCHAR(40), @operation_id),
        7, SYSDATETIMEOFFSET(), SYSDATETIMEOFFSET(), SUSER_SNAME(), 0);
    COMMIT;
END
"""

ENABLE_WORKER_AGENT = f"""
CREATE OR ALTER PROCEDURE catalog.enable_worker_agent
    @WorkerAgentId NVARCHAR(64)
AS
BEGIN
{HEAD}
    DECLARE @msg NVARCHAR(2048);
    BEGIN TRANSACTION;
    UPDATE internal.worker_agents SET is_enabled = 1 WHERE worker_agent_id = @WorkerAgentId;
    IF @@ROWCOUNT = 0
    BEGIN
        SET @msg = CONCAT(N'worker agent ''', @WorkerAgentId, N''' does not exist');
        {_fail("@msg")};
    END;
    COMMIT;
END
"""

DISABLE_WORKER_AGENT = f"""
CREATE OR ALTER PROCEDURE catalog.disable_worker_agent
    @WorkerAgentId NVARCHAR(64)
AS
BEGIN
{HEAD}
    DECLARE @msg NVARCHAR(2048);
    BEGIN TRANSACTION;
    UPDATE internal.worker_agents SET is_enabled = 0 WHERE worker_agent_id = @WorkerAgentId;
    IF @@ROWCOUNT = 0
    BEGIN
        SET @msg = CONCAT(N'worker agent ''', @WorkerAgentId, N''' does not exist');
        {_fail("@msg")};
    END;
    -- Drain: dispatched, not started attempts go back to pending; running ones finish.
    UPDATE a SET outcome = N'withdrawn', ended_at = SYSDATETIMEOFFSET()
    FROM internal.task_attempts a
    JOIN internal.tasks t WITH (UPDLOCK, ROWLOCK)
        ON t.task_id = a.task_id AND t.attempt = a.attempt
    WHERE t.worker_agent_id = @WorkerAgentId AND t.status = 2 AND a.outcome IS NULL;
    UPDATE internal.tasks SET status = 1, worker_agent_id = NULL, expires_at = NULL,
        ready_for_dispatch_time = SYSDATETIMEOFFSET(), published = 0,
        last_updated_time = SYSDATETIMEOFFSET()
    WHERE worker_agent_id = @WorkerAgentId AND status = 2;
    COMMIT;
END
"""

PROCEDURES = (
    CREATE_EXECUTION,
    SET_EXECUTION_PARAMETER_VALUE,
    ADD_EXECUTION_WORKER,
    START_EXECUTION,
    STOP_OPERATION,
    ENABLE_WORKER_AGENT,
    DISABLE_WORKER_AGENT,
)
NAMES = (
    "disable_worker_agent",
    "enable_worker_agent",
    "stop_operation",
    "start_execution",
    "add_execution_worker",
    "set_execution_parameter_value",
    "create_execution",
)
DROPS = tuple(f"DROP PROCEDURE IF EXISTS catalog.{name}" for name in NAMES)
