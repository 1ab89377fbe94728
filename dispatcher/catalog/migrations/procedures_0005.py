"""SSIS's catalog procedures as SQL, frozen at revision 0005: PL/pgSQL functions for
PostgreSQL and T-SQL procedures for SQL Server, in the ``catalog`` schema, so a SQL client,
pg_cron or SQL Agent can drive the catalog as SSISDB is driven::

    SELECT catalog.create_execution('Finance', 'SalesETL', 'LoadSales');        -- 7
    SELECT catalog.set_execution_parameter_value(7, 20, 'Currency', 'USD');
    SELECT catalog.start_execution(7, retry_count => 1);

They do what ``dispatcher.catalog`` does, with the same status codes and refusals (an
exception; the transaction writes nothing), and the master dispatches what they start at
its next poll (``dispatch_poll_interval_ms``). The database never holds the catalog key,
so what needs it is refused with a hint: a sensitive parameter's value cannot be set here,
a sensitive parameter cannot take a plain variable, and a variable must have its
parameter's type (the Python side converts). Messages avoid the percent sign (Alembic
renders these through SQLAlchemy text).
"""

from __future__ import annotations

COERCE = """
CREATE OR REPLACE FUNCTION internal.scaleout_json_value(data_type text, name text, value text)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v text := btrim(value);
BEGIN
    IF value IS NULL THEN
        RETURN 'null';
    END IF;
    IF data_type = 'string' THEN
        RETURN to_jsonb(value)::text;
    ELSIF data_type = 'int' AND v ~ '^[+-]?[0-9]+$' THEN
        RETURN (v::numeric)::text;
    ELSIF data_type = 'float' THEN
        BEGIN
            RETURN to_jsonb(v::double precision)::text;
        EXCEPTION WHEN invalid_text_representation THEN
            NULL;
        END;
    ELSIF data_type = 'bool' AND lower(v) IN ('1', 'true', 'yes', 'on') THEN
        RETURN 'true';
    ELSIF data_type = 'bool' AND lower(v) IN ('0', 'false', 'no', 'off') THEN
        RETURN 'false';
    END IF;
    RAISE EXCEPTION USING ERRCODE = '22023',
        MESSAGE = 'parameter ' || name || ' takes a ' || data_type || ', not ' || quote_literal(value);
END $$
"""

CREATE_EXECUTION = """
CREATE OR REPLACE FUNCTION catalog.create_execution(
    folder_name text,
    project_name text,
    package_name text,
    reference_id bigint DEFAULT NULL,
    use32bitruntime boolean DEFAULT false,
    runinscaleout boolean DEFAULT NULL,
    useanyworker boolean DEFAULT true
) RETURNS bigint LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_folder bigint;
    v_project internal.projects%ROWTYPE;
    v_ref internal.environment_references%ROWTYPE;
    v_env bigint;
    v_id bigint;
    v_job uuid := gen_random_uuid();
    v_scaleout boolean := create_execution.runinscaleout;
    p record;
    v record;
    v_value text;
BEGIN
    IF v_scaleout IS NULL THEN
        SELECT property_value IS DISTINCT FROM '0' INTO v_scaleout
        FROM internal.catalog_properties WHERE property_name = 'DEFAULT_EXECUTION_MODE';
        v_scaleout := coalesce(v_scaleout, true);
    END IF;
    IF NOT v_scaleout THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'scaleout runs executions in Scale Out only',
            HINT = 'pass runinscaleout => true or leave it unset';
    END IF;
    SELECT f.folder_id INTO v_folder FROM internal.folders f WHERE f.name = create_execution.folder_name;
    IF v_folder IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'folder ' || quote_literal(create_execution.folder_name) || ' does not exist';
    END IF;
    SELECT * INTO v_project FROM internal.projects pr
    WHERE pr.folder_id = v_folder AND pr.name = create_execution.project_name;
    IF NOT FOUND OR v_project.object_version_lsn IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'project ' || quote_literal(create_execution.project_name)
                || ' does not exist in folder ' || quote_literal(create_execution.folder_name);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM internal.packages k
        WHERE k.project_version_lsn = v_project.object_version_lsn
          AND k.name = create_execution.package_name
    ) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'package ' || quote_literal(create_execution.package_name)
                || ' does not exist in project ' || quote_literal(create_execution.project_name);
    END IF;
    IF create_execution.reference_id IS NOT NULL THEN
        SELECT * INTO v_ref FROM internal.environment_references r
        WHERE r.reference_id = create_execution.reference_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002',
                MESSAGE = 'environment reference ' || create_execution.reference_id || ' does not exist';
        END IF;
        IF v_ref.project_id <> v_project.project_id THEN
            RAISE EXCEPTION USING ERRCODE = 'P0001',
                MESSAGE = 'environment reference ' || create_execution.reference_id
                    || ' belongs to another project, not to ' || create_execution.project_name;
        END IF;
        SELECT e.environment_id INTO v_env
        FROM internal.environments e JOIN internal.folders f ON f.folder_id = e.folder_id
        WHERE f.name = coalesce(v_ref.environment_folder_name, create_execution.folder_name)
          AND e.environment_name = v_ref.environment_name;
        IF v_env IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002',
                MESSAGE = 'environment reference ' || create_execution.reference_id
                    || ' names a missing environment: ' || v_ref.environment_name;
        END IF;
    END IF;
    INSERT INTO internal.operations (operation_type, created_time, object_type, object_id,
        object_name, status, caller_name, executed_count, machine_name)
    VALUES (200, now(), 20, v_project.project_id, create_execution.project_name, 1,
        session_user, 0, '')
    RETURNING operation_id INTO v_id;
    INSERT INTO internal.executions (execution_id, folder_name, project_name, package_name,
        reference_id, project_lsn, use32bitruntime, runinscaleout, useanyworker, job_id)
    VALUES (v_id, create_execution.folder_name, create_execution.project_name,
        create_execution.package_name, create_execution.reference_id,
        v_project.object_version_lsn, create_execution.use32bitruntime, true,
        create_execution.useanyworker, v_job);
    INSERT INTO internal.jobs (job_id, execution_id, job_type, use_any_worker, is_cancelled,
        creator, created_time, last_updated_time)
    VALUES (v_job, v_id, 1, create_execution.useanyworker, false, session_user, now(), now());
    FOR p IN
        SELECT * FROM internal.object_parameters o
        WHERE o.project_version_lsn = v_project.object_version_lsn
          AND ((o.object_type = 20 AND o.object_name = create_execution.project_name)
            OR (o.object_type = 30 AND o.object_name = create_execution.package_name))
    LOOP
        v_value := NULL;
        IF p.value_set AND p.value_type = 'R' THEN
            IF v_env IS NOT NULL THEN
                SELECT * INTO v FROM internal.environment_variables ev
                WHERE ev.environment_id = v_env AND ev.name = p.referenced_variable_name;
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'P0002',
                        MESSAGE = 'parameter ' || p.parameter_name || ' references variable '
                            || quote_literal(p.referenced_variable_name)
                            || ', which environment ' || quote_literal(v_ref.environment_name)
                            || ' does not have';
                END IF;
                IF v.sensitive AND NOT p.sensitive THEN
                    RAISE EXCEPTION USING ERRCODE = 'P0001',
                        MESSAGE = 'sensitive variable ' || quote_literal(v.name)
                            || ' cannot give a value to parameter ' || p.parameter_name
                            || ', which is not sensitive';
                END IF;
                IF p.sensitive AND NOT v.sensitive THEN
                    RAISE EXCEPTION USING ERRCODE = 'P0001',
                        MESSAGE = 'sensitive parameter ' || p.parameter_name
                            || ' takes plain variable ' || quote_literal(v.name)
                            || ': its value must be encrypted with the catalog key, which the database does not hold',
                        HINT = 'make the variable sensitive, or create the execution with scaleout';
                END IF;
                IF v.type <> p.data_type THEN
                    RAISE EXCEPTION USING ERRCODE = 'P0001',
                        MESSAGE = 'variable ' || quote_literal(v.name) || ' is a ' || v.type
                            || ' and parameter ' || p.parameter_name || ' a ' || p.data_type,
                        HINT = 'give the variable the parameter''s type, or create the execution with scaleout';
                END IF;
                v_value := v.value;
            END IF;
        ELSIF p.value_set AND p.server_value IS NOT NULL THEN
            v_value := p.server_value;
        ELSE
            v_value := p.default_value;
        END IF;
        IF v_value IS NOT NULL THEN
            INSERT INTO internal.execution_parameter_values (execution_id, object_type,
                parameter_name, parameter_value, sensitive)
            VALUES (v_id, p.object_type, p.parameter_name, v_value, p.sensitive);
        END IF;
    END LOOP;
    RETURN v_id;
END $$
"""

_CREATED_EXECUTION = """
    SELECT e.execution_id, e.project_name, e.package_name, e.project_lsn, e.useanyworker,
           e.runinscaleout, e.job_id, o.status
    INTO v_exec
    FROM internal.executions e JOIN internal.operations o ON o.operation_id = e.execution_id
    WHERE e.execution_id = {fn}.execution_id
    FOR UPDATE OF o;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'execution ' || {fn}.execution_id || ' does not exist';
    END IF;
    IF v_exec.status <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'cannot {action}: execution ' || {fn}.execution_id || ' already started';
    END IF;
"""

SET_EXECUTION_PARAMETER_VALUE = (
    """
CREATE OR REPLACE FUNCTION catalog.set_execution_parameter_value(
    execution_id bigint,
    object_type smallint,
    parameter_name text,
    parameter_value text
) RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_exec record;
    v_type text;
    v_sensitive boolean := false;
    v_owner text;
BEGIN
"""
    + _CREATED_EXECUTION.format(fn="set_execution_parameter_value", action="set a parameter")
    + """
    IF set_execution_parameter_value.object_type = 50 THEN
        v_type := CASE set_execution_parameter_value.parameter_name
            WHEN 'LOGGING_LEVEL' THEN 'int'
            WHEN 'SYNCHRONIZED' THEN 'bool'
            WHEN 'DUMP_ON_ERROR' THEN 'bool'
            WHEN 'DUMP_ON_EVENT' THEN 'bool'
            WHEN 'CUSTOMIZED_LOGGING_LEVEL' THEN 'string'
            WHEN 'DUMP_EVENT_CODE' THEN 'string'
            WHEN 'CALLER_INFO' THEN 'string'
        END;
    ELSIF set_execution_parameter_value.object_type IN (20, 30) THEN
        v_owner := CASE WHEN set_execution_parameter_value.object_type = 20
            THEN v_exec.project_name ELSE v_exec.package_name END;
        SELECT p.data_type, p.sensitive INTO v_type, v_sensitive
        FROM internal.object_parameters p
        WHERE p.project_version_lsn = v_exec.project_lsn
          AND p.object_type = set_execution_parameter_value.object_type
          AND p.object_name = v_owner
          AND p.parameter_name = set_execution_parameter_value.parameter_name;
    ELSE
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'object_type must be 20 (project), 30 (package) or 50 (system), not '
                || set_execution_parameter_value.object_type;
    END IF;
    IF v_type IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'parameter ' || quote_literal(set_execution_parameter_value.parameter_name)
                || ' (object_type ' || set_execution_parameter_value.object_type || ') is not declared';
    END IF;
    IF v_sensitive THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'parameter ' || set_execution_parameter_value.parameter_name
                || ' is sensitive: its value must be encrypted with the catalog key, which the database does not hold',
            HINT = 'set it with scaleout executions create --param, the Python API, or an environment reference to a sensitive variable';
    END IF;
    DELETE FROM internal.execution_parameter_values v
    WHERE v.execution_id = set_execution_parameter_value.execution_id
      AND v.object_type = set_execution_parameter_value.object_type
      AND v.parameter_name = set_execution_parameter_value.parameter_name;
    INSERT INTO internal.execution_parameter_values (execution_id, object_type, parameter_name,
        parameter_value, sensitive)
    VALUES (set_execution_parameter_value.execution_id, set_execution_parameter_value.object_type,
        set_execution_parameter_value.parameter_name,
        internal.scaleout_json_value(v_type, set_execution_parameter_value.parameter_name,
            set_execution_parameter_value.parameter_value),
        false);
END $$
"""
)

ADD_EXECUTION_WORKER = (
    """
CREATE OR REPLACE FUNCTION catalog.add_execution_worker(execution_id bigint, workeragent_id text)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_exec record;
BEGIN
"""
    + _CREATED_EXECUTION.format(fn="add_execution_worker", action="add a worker")
    + """
    IF v_exec.useanyworker THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'execution ' || add_execution_worker.execution_id
                || ' already allows any worker (useanyworker=1)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM internal.worker_agents w
                   WHERE w.worker_agent_id = add_execution_worker.workeragent_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'worker agent ' || quote_literal(add_execution_worker.workeragent_id)
                || ' does not exist';
    END IF;
    INSERT INTO internal.job_worker_agents (job_id, worker_agent_id)
    VALUES (v_exec.job_id, add_execution_worker.workeragent_id)
    ON CONFLICT DO NOTHING;
END $$
"""
)

START_EXECUTION = (
    """
CREATE OR REPLACE FUNCTION catalog.start_execution(execution_id bigint, retry_count integer DEFAULT 0)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_exec record;
    v_missing text;
BEGIN
"""
    + _CREATED_EXECUTION.format(fn="start_execution", action="start")
    + """
    IF start_execution.retry_count < 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'retry_count must be 0 or more, not ' || start_execution.retry_count;
    END IF;
    SELECT string_agg(p.parameter_name || ' (variable ' || p.referenced_variable_name || ')', ', '
                      ORDER BY p.parameter_name)
    INTO v_missing
    FROM internal.object_parameters p
    WHERE p.project_version_lsn = v_exec.project_lsn
      AND ((p.object_type = 20 AND p.object_name = v_exec.project_name)
        OR (p.object_type = 30 AND p.object_name = v_exec.package_name))
      AND p.value_set AND p.value_type = 'R'
      AND NOT EXISTS (SELECT 1 FROM internal.execution_parameter_values v
                      WHERE v.execution_id = start_execution.execution_id
                        AND v.object_type = p.object_type
                        AND v.parameter_name = p.parameter_name);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'execution ' || start_execution.execution_id || ' takes ' || v_missing
                || ' from an environment, and has no reference';
    END IF;
    SELECT string_agg(p.parameter_name, ', ' ORDER BY p.object_type, p.parameter_name)
    INTO v_missing
    FROM internal.object_parameters p
    WHERE p.project_version_lsn = v_exec.project_lsn
      AND ((p.object_type = 20 AND p.object_name = v_exec.project_name)
        OR (p.object_type = 30 AND p.object_name = v_exec.package_name))
      AND p.required
      AND NOT EXISTS (SELECT 1 FROM internal.execution_parameter_values v
                      WHERE v.execution_id = start_execution.execution_id
                        AND v.object_type = p.object_type
                        AND v.parameter_name = p.parameter_name);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'execution ' || start_execution.execution_id
                || ' lacks required parameters: ' || v_missing;
    END IF;
    UPDATE internal.operations o SET status = 5, machine_name = ''
    WHERE o.operation_id = start_execution.execution_id AND o.status = 1;
    INSERT INTO internal.tasks (task_id, job_id, execution_id, task_type, status, attempt,
        executed_count, max_executed_count, ready_for_dispatch_time, is_cancelled,
        cancel_sent, published, created_time, last_updated_time)
    VALUES (gen_random_uuid(), v_exec.job_id, start_execution.execution_id, 0, 1, 0, 0,
        start_execution.retry_count + 1, now(), false, false, false, now(), now());
END $$
"""
)

STOP_OPERATION = """
CREATE OR REPLACE FUNCTION catalog.stop_operation(operation_id bigint)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_task internal.tasks%ROWTYPE;
    v_op record;
BEGIN
    -- The task before the operation, the order the master's status reports lock in.
    SELECT * INTO v_task FROM internal.tasks t
    WHERE t.execution_id = stop_operation.operation_id FOR UPDATE;
    SELECT o.operation_type, o.status INTO v_op FROM internal.operations o
    WHERE o.operation_id = stop_operation.operation_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'operation ' || stop_operation.operation_id || ' does not exist';
    END IF;
    IF v_op.operation_type <> 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'operation ' || stop_operation.operation_id
                || ' is not an execution; it cannot be stopped';
    END IF;
    IF v_op.status IN (1, 3, 4, 6, 7, 9) THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'execution ' || stop_operation.operation_id
                || ' is not pending or running; only a pending or running one stops';
    END IF;
    IF v_op.status = 8 THEN
        RETURN;
    END IF;
    IF v_task.task_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001',
            MESSAGE = 'execution ' || stop_operation.operation_id || ' has no task to stop';
    END IF;
    IF v_task.status = 3 THEN
        UPDATE internal.tasks t SET is_cancelled = true, cancel_sent = false,
            last_updated_time = now()
        WHERE t.task_id = v_task.task_id AND t.attempt = v_task.attempt;
        UPDATE internal.operations o SET status = 8, stopped_by_name = session_user
        WHERE o.operation_id = stop_operation.operation_id;
    ELSE
        UPDATE internal.tasks t SET status = 6, is_cancelled = true,
            cancel_sent = (v_task.worker_agent_id IS NULL), expires_at = NULL,
            last_updated_time = now()
        WHERE t.task_id = v_task.task_id AND t.attempt = v_task.attempt AND t.status IN (1, 2);
        IF v_task.status = 2 THEN
            UPDATE internal.task_attempts a SET outcome = 'canceled', ended_at = now()
            WHERE a.task_id = v_task.task_id AND a.attempt = v_task.attempt AND a.outcome IS NULL;
        END IF;
        UPDATE internal.operations o SET status = 3, end_time = now(),
            stopped_by_name = session_user
        WHERE o.operation_id = stop_operation.operation_id;
    END IF;
    UPDATE internal.jobs j SET is_cancelled = true WHERE j.execution_id = stop_operation.operation_id;
    INSERT INTO internal.operations (operation_type, created_time, object_type, object_id,
        object_name, status, start_time, end_time, caller_name, executed_count)
    VALUES (202, now(), 50, stop_operation.operation_id, stop_operation.operation_id::text, 7,
        now(), now(), session_user, 0);
END $$
"""

ENABLE_WORKER_AGENT = """
CREATE OR REPLACE FUNCTION catalog.enable_worker_agent(workeragent_id text)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    UPDATE internal.worker_agents w SET is_enabled = true
    WHERE w.worker_agent_id = enable_worker_agent.workeragent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'worker agent ' || quote_literal(enable_worker_agent.workeragent_id)
                || ' does not exist';
    END IF;
END $$
"""

DISABLE_WORKER_AGENT = """
CREATE OR REPLACE FUNCTION catalog.disable_worker_agent(workeragent_id text)
RETURNS void LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t record;
BEGIN
    UPDATE internal.worker_agents w SET is_enabled = false
    WHERE w.worker_agent_id = disable_worker_agent.workeragent_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = 'worker agent ' || quote_literal(disable_worker_agent.workeragent_id)
                || ' does not exist';
    END IF;
    -- Drain: dispatched, not started attempts go back to pending; running ones finish.
    FOR t IN
        SELECT k.task_id, k.attempt FROM internal.tasks k
        WHERE k.worker_agent_id = disable_worker_agent.workeragent_id AND k.status = 2
        ORDER BY k.task_id FOR UPDATE
    LOOP
        UPDATE internal.tasks k SET status = 1, worker_agent_id = NULL, expires_at = NULL,
            ready_for_dispatch_time = now(), published = false, last_updated_time = now()
        WHERE k.task_id = t.task_id AND k.attempt = t.attempt AND k.status = 2;
        UPDATE internal.task_attempts a SET outcome = 'withdrawn', ended_at = now()
        WHERE a.task_id = t.task_id AND a.attempt = t.attempt AND a.outcome IS NULL;
    END LOOP;
END $$
"""

POSTGRESQL = (
    COERCE,
    CREATE_EXECUTION,
    SET_EXECUTION_PARAMETER_VALUE,
    ADD_EXECUTION_WORKER,
    START_EXECUTION,
    STOP_OPERATION,
    ENABLE_WORKER_AGENT,
    DISABLE_WORKER_AGENT,
)
POSTGRESQL_DROPS = (
    "DROP FUNCTION IF EXISTS catalog.disable_worker_agent(text)",
    "DROP FUNCTION IF EXISTS catalog.enable_worker_agent(text)",
    "DROP FUNCTION IF EXISTS catalog.stop_operation(bigint)",
    "DROP FUNCTION IF EXISTS catalog.start_execution(bigint, integer)",
    "DROP FUNCTION IF EXISTS catalog.add_execution_worker(bigint, text)",
    "DROP FUNCTION IF EXISTS catalog.set_execution_parameter_value(bigint, smallint, text, text)",
    "DROP FUNCTION IF EXISTS catalog.create_execution(text, text, text, bigint, boolean, boolean, boolean)",
    "DROP FUNCTION IF EXISTS internal.scaleout_json_value(text, text, text)",
)
